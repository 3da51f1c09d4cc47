// Runs examples/generate.ts as a child process, shared by the suites.
import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export interface ExampleRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the example with `args`, in `cwd`, with this process's environment less VQD_API_KEY and VQD_CA_CERT (a test
 * sets them through `env`). tsx is passed by its URL, so the example also runs from a folder outside this package.
 */
export function runExample(args: string[], env: Record<string, string> = {}, cwd = PACKAGE_ROOT): Promise<ExampleRun> {
  const base = { ...process.env };
  delete base.VQD_API_KEY;
  delete base.VQD_CA_CERT;
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), join(PACKAGE_ROOT, "examples/generate.ts"), ...args], {
      cwd,
      env: { ...base, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => resolveRun({ code, stdout, stderr }));
  });
}
