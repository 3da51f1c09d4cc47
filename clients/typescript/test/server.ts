// Starts the real VqDiffusion server (the Debug build) on a free loopback port for the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { VqDiffusionClient } from "../src/index.js";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const SERVER_DLL = join(REPO_ROOT, "src/VqDiffusion.Server/bin/Debug/net10.0/VqDiffusion.Server.dll");
export const MODEL_DIR = join(REPO_ROOT, "models/tiny-ithq");

export interface TestServer {
  address: string;
  client: VqDiffusionClient;
  log: () => string;
  stop: () => Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolvePort(port));
    });
  });
}

export async function startServer(timeoutMs = 120_000, modelDir = MODEL_DIR): Promise<TestServer> {
  if (!existsSync(SERVER_DLL)) {
    throw new Error(
      `server build not found: ${SERVER_DLL}\nbuild it first: (cd ${REPO_ROOT} && dotnet build src/VqDiffusion.Server)`,
    );
  }
  const port = await freePort();
  const address = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    "dotnet",
    [SERVER_DLL, "--urls", address, `--Model:Path=${modelDir}`, "--Logging:LogLevel:Default=Warning"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) => child.once("exit", () => ((exited = true), r())));
  const client = new VqDiffusionClient(address);
  const stop = async () => {
    client.close();
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exit;
      clearTimeout(timer);
    }
  };
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`the server exited during startup:\n${output}`);
    try {
      await client.getModelInfo({ deadline: Date.now() + 2_000 });
      return { address, client, log: () => output, stop };
    } catch (err) {
      if (Date.now() > until) {
        await stop();
        throw new Error(`the server did not answer GetModelInfo within ${timeoutMs} ms: ${String(err)}\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
