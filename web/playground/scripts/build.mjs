// Builds the playground into src/VqDiffusion.Server/wwwroot: index.html, playground.css and playground.js (esbuild,
// one minified ES module). The output is committed (the server ships it); `--check` builds into a temporary folder
// and fails when the committed files differ (the same bytes come from the same sources and the locked esbuild).
//   node scripts/build.mjs          write ../../src/VqDiffusion.Server/wwwroot
//   node scripts/build.mjs --check  fail when the committed bundle is stale
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const committed = resolve(root, "../../src/VqDiffusion.Server/wwwroot");
const check = process.argv.includes("--check");

// The generated code lives in clients/typescript/src/gen; its @bufbuild/protobuf imports resolve here, so that the
// bundle has one copy of the runtime (the one this package locks).
const oneProtobufRuntime = {
  name: "one-protobuf-runtime",
  setup(b) {
    b.onResolve({ filter: /^@bufbuild\/protobuf(\/.*)?$/ }, async (args) => {
      if (args.pluginData === "here") return undefined;
      return b.resolve(args.path, { kind: args.kind, resolveDir: root, pluginData: "here" });
    });
  },
};

async function bundle(outDir) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  await build({
    absWorkingDir: root,
    entryPoints: { playground: "src/main.ts" },
    bundle: true,
    format: "esm",
    target: ["es2022"],
    platform: "browser",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    outdir: outDir,
    logLevel: "warning",
    plugins: [oneProtobufRuntime],
  });
  copyFileSync(join(root, "index.html"), join(outDir, "index.html"));
  copyFileSync(join(root, "src", "style.css"), join(outDir, "playground.css"));
  return readdirSync(outDir).sort();
}

if (!check) {
  const files = await bundle(committed);
  console.log(`built ${files.join(", ")} into ${relative(process.cwd(), committed) || "."}`);
} else {
  const tmp = mkdtempSync(join(tmpdir(), "vqd-playground-"));
  try {
    const want = await bundle(tmp);
    const have = existsSync(committed) ? readdirSync(committed).sort() : [];
    const problems = [];
    for (const f of want) {
      if (!have.includes(f)) problems.push(`missing: wwwroot/${f}`);
      else if (!readFileSync(join(tmp, f)).equals(readFileSync(join(committed, f)))) problems.push(`stale: wwwroot/${f}`);
    }
    for (const f of have) if (!want.includes(f)) problems.push(`unexpected: wwwroot/${f}`);
    if (problems.length > 0) {
      console.error(problems.join("\n"));
      console.error("error: src/VqDiffusion.Server/wwwroot is out of date; run `npm run build` in web/playground and commit the result.");
      process.exit(1);
    }
    console.log(`wwwroot is up to date (${want.join(", ")}).`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
