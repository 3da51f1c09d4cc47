// Regenerates src/gen from ../../protos and ./protos with buf + protoc-gen-es (both devDependencies).
//   node scripts/generate.mjs          write src/gen
//   node scripts/generate.mjs --check  generate into a temp dir and fail when src/gen differs
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const buf = join(root, "node_modules", ".bin", process.platform === "win32" ? "buf.cmd" : "buf");
const inputs = [resolve(root, "../../protos"), join(root, "protos")];
const committed = join(root, "src", "gen");
const check = process.argv.includes("--check");

if (!existsSync(buf) || !existsSync(join(root, "node_modules", ".bin", "protoc-gen-es"))) {
  console.error("error: buf / protoc-gen-es missing; run `npm ci` in clients/typescript first.");
  process.exit(1);
}

function generate(outDir) {
  rmSync(outDir, { recursive: true, force: true });
  for (const input of inputs) {
    // --output is the base directory for the template's `out: src/gen`.
    execFileSync(buf, ["generate", "--template", join(root, "buf.gen.yaml"), "--output", outDir, input], {
      cwd: root,
      stdio: "inherit",
    });
  }
  return join(outDir, "src", "gen");
}

function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p).split("\\").join("/"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

if (!check) {
  const tmp = mkdtempSync(join(tmpdir(), "vqd-gen-"));
  try {
    const gen = generate(tmp);
    rmSync(committed, { recursive: true, force: true });
    cpSync(gen, committed, { recursive: true });
    console.log(`generated ${listFiles(committed).length} files into ${relative(process.cwd(), committed) || "."}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  const tmp = mkdtempSync(join(tmpdir(), "vqd-gen-check-"));
  try {
    const gen = generate(tmp);
    const want = listFiles(gen);
    const have = listFiles(committed);
    const problems = [];
    for (const f of want) {
      if (!have.includes(f)) problems.push(`missing: src/gen/${f}`);
      else if (!readFileSync(join(gen, f)).equals(readFileSync(join(committed, f)))) problems.push(`stale: src/gen/${f}`);
    }
    for (const f of have) if (!want.includes(f)) problems.push(`unexpected: src/gen/${f}`);
    if (problems.length > 0) {
      console.error(problems.join("\n"));
      console.error("error: src/gen is out of date; run `npm run generate` and commit the result.");
      process.exit(1);
    }
    console.log(`src/gen is up to date (${want.length} files).`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
