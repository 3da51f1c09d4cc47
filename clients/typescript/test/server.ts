// Starts the real VqDiffusion server (the Debug build) on a free loopback port for the tests.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
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
  /** With `https`: the TLS address (a second port of the same process), the certificate's file and PEM bytes. */
  httpsAddress?: string;
  caCert?: string;
  caPem?: Buffer;
}

export interface ServerOptions {
  /** More command-line configuration (`--Auth:ApiKeys:NAME=KEY`). */
  extraArgs?: string[];
  /** Also listen on TLS, with a self-signed certificate for 127.0.0.1 made in a temporary folder. */
  https?: boolean;
  /** The API key the readiness probe (and `client`) sends. */
  apiKey?: string;
}

/** A self-signed certificate for 127.0.0.1/localhost (one day) in `dir`: cert.pem and key.pem. */
export function makeCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  try {
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
      { stdio: ["ignore", "ignore", "pipe"], timeout: 60_000 },
    );
  } catch (err) {
    throw new Error(`openssl could not make a test certificate (Debian package openssl; .ci/run installs it): ${String(err)}`);
  }
  return { cert, key };
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

export async function startServer(timeoutMs = 120_000, modelDir = MODEL_DIR, options: ServerOptions = {}): Promise<TestServer> {
  if (!existsSync(SERVER_DLL)) {
    throw new Error(
      `server build not found: ${SERVER_DLL}\nbuild it first: (cd ${REPO_ROOT} && dotnet build src/VqDiffusion.Server)`,
    );
  }
  const port = await freePort();
  const address = `http://127.0.0.1:${port}`;
  let urls = address;
  const tlsArgs: string[] = [];
  let tls: { dir: string; httpsAddress: string; cert: string; pem: Buffer } | undefined;
  if (options.https) {
    const dir = mkdtempSync(join(tmpdir(), "vqd-tls-"));
    try {
      const { cert, key } = makeCertificate(dir);
      tls = { dir, httpsAddress: `https://127.0.0.1:${await freePort()}`, cert, pem: readFileSync(cert) };
      urls = `${address};${tls.httpsAddress}`;
      tlsArgs.push(`--Kestrel:Certificates:Default:Path=${cert}`, `--Kestrel:Certificates:Default:KeyPath=${key}`);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
  const child: ChildProcess = spawn(
    "dotnet",
    [SERVER_DLL, "--urls", urls, `--Model:Path=${modelDir}`, "--Logging:LogLevel:Default=Warning", ...tlsArgs, ...(options.extraArgs ?? [])],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) => child.once("exit", () => ((exited = true), r())));
  const client = new VqDiffusionClient(address, { apiKey: options.apiKey });
  const stop = async () => {
    client.close();
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exit;
      clearTimeout(timer);
    }
    if (tls) rmSync(tls.dir, { recursive: true, force: true });
  };
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`the server exited during startup:\n${output}`);
    }
    try {
      await client.getModelInfo({ deadline: Date.now() + 2_000 });
      return { address, client, log: () => output, stop, httpsAddress: tls?.httpsAddress, caCert: tls?.cert, caPem: tls?.pem };
    } catch (err) {
      if (Date.now() > until) {
        await stop();
        throw new Error(`the server did not answer GetModelInfo within ${timeoutMs} ms: ${String(err)}\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
