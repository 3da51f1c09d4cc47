// Starts the real VqDiffusion server (the Debug build) with its gRPC endpoint (--urls, h2c) and its browser endpoint
// (--Web:Url, HTTP/1.1) on free loopback ports, as clients/typescript/test/server.ts does for the gRPC tests.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const SERVER_DLL = join(REPO_ROOT, "src/VqDiffusion.Server/bin/Debug/net10.0/VqDiffusion.Server.dll");
export const MODEL_DIR = join(REPO_ROOT, "models/tiny-ithq");

/** Where screenshots go: $VQD_BROWSER_ARTIFACTS, else web/playground/test-results (gitignored). */
export function artifactsDir(): string {
  const dir = process.env.VQD_BROWSER_ARTIFACTS || resolve(dirname(fileURLToPath(import.meta.url)), "../test-results");
  mkdirSync(dir, { recursive: true });
  return dir;
}

export interface WebTestServer {
  /** The gRPC endpoint, http://127.0.0.1:P1 (HTTP/2 cleartext). */
  grpcAddress: string;
  /** The browser endpoint, http://127.0.0.1:P2 (HTTP/1.1: the page and gRPC-Web). */
  webAddress: string;
  log: () => string;
  stop: () => Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolvePort(port));
    });
  });
}

export async function startWebServer(extraArgs: string[] = [], timeoutMs = 120_000): Promise<WebTestServer> {
  if (!existsSync(SERVER_DLL)) {
    throw new Error(`server build not found: ${SERVER_DLL}\nbuild it first: (cd ${REPO_ROOT} && dotnet build src/VqDiffusion.Server)`);
  }
  const grpcAddress = `http://127.0.0.1:${await freePort()}`;
  const webAddress = `http://127.0.0.1:${await freePort()}`;
  const child: ChildProcess = spawn(
    "dotnet",
    [
      SERVER_DLL, "--urls", grpcAddress, `--Web:Url=${webAddress}`, `--Model:Path=${MODEL_DIR}`,
      "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:VqDiffusion=Information", ...extraArgs,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) => child.once("exit", () => ((exited = true), r())));
  const stop = async () => {
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
      // Ready once the model is loaded: the log line of ModelHost, and the page answers.
      if (/Model ready/.test(output)) {
        const page = await fetch(webAddress, { signal: AbortSignal.timeout(2_000) });
        if (page.ok) return { grpcAddress, webAddress, log: () => output, stop };
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > until) {
      await stop();
      throw new Error(`the server was not ready within ${timeoutMs} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
