// The vq-diffusion sampler, editing and inpainting through the TypeScript client and its example: every case of the
// improved golden set (outputs of the original microsoft/VQ-Diffusion samplers) from its manifest parameters.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PNG } from "pngjs";
import {
  ClassifierFreeEmbeddings,
  SamplerKind,
  UnmaskPrior,
  VqDiffusionError,
  type GenerateEvent,
  type GenerateRequestInit,
} from "../src/index.js";
import { runExample } from "./example.js";
import { REPO_ROOT, startServer, type TestServer } from "./server.js";

// The improved golden set; VQD_IMPROVED_GOLDEN selects another set built the same way.
const GOLDEN = process.env.VQD_IMPROVED_GOLDEN || join(REPO_ROOT, "tests/fixtures/improved-tiny/golden");

interface Tensor {
  shape: number[];
  values: number[];
}

/** The tensors of a safetensors file (I64, U8, F32) as numbers. */
function readSafetensors(file: string): Record<string, Tensor> {
  const data = readFileSync(file);
  const length = Number(data.readBigUInt64LE(0));
  const header = JSON.parse(data.subarray(8, 8 + length).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, Tensor> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [begin, end] = entry.data_offsets;
    const view = new DataView(data.buffer, data.byteOffset + 8 + length + begin, end - begin);
    const values: number[] = [];
    if (entry.dtype === "I64") for (let i = 0; i < view.byteLength; i += 8) values.push(Number(view.getBigInt64(i, true)));
    else if (entry.dtype === "U8") for (let i = 0; i < view.byteLength; i++) values.push(view.getUint8(i));
    else if (entry.dtype === "F32") for (let i = 0; i < view.byteLength; i += 4) values.push(view.getFloat32(i, true));
    else continue;
    out[name] = { shape: entry.shape, values };
  }
  return out;
}

const MANIFEST = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")) as {
  model: string;
  cases: Record<string, { file: string; params: Record<string, unknown>; n_sample?: unknown; num_steps: number }>;
};

/** The set's model: models/<name> when shipped, else the manifest's path. */
function modelDir(): string {
  const parts = MANIFEST.model.replace(/\\/g, "/").replace(/\/$/, "").split("/");
  const name = parts.at(-1) === "model" && parts.length > 1 ? parts.at(-2)! : parts.at(-1)!;
  for (const dir of [join(REPO_ROOT, "models", name), join(REPO_ROOT, MANIFEST.model), join(REPO_ROOT, "..", MANIFEST.model)]) {
    if (existsSync(join(dir, "model_index.json"))) return dir;
  }
  throw new Error(`the improved golden set's model ${MANIFEST.model} is not in models/${name}`);
}

/** A case's request and rows (rows[i] = the original's batch row of prompt-major image i: [p0, p1, p0, p1]). */
function caseRequest(name: string): { request: GenerateRequestInit; rows: number[] } {
  const c = MANIFEST.cases[name]!;
  const p = c.params;
  const prompts = p.prompts as string[];
  if (p.kind === "edit") {
    const content = readSafetensors(join(GOLDEN, c.file)).content_tokens_in!.values;
    return {
      request: { prompts, seed: BigInt(p.seed as number), sampler: { kind: SamplerKind.VQ_DIFFUSION }, edit: { sourceTokens: content, strength: p.filter_ratio as number } },
      rows: prompts.map((_, i) => i),
    };
  }
  const speed = (p.infer_speed as number | undefined) ?? 1;
  const fast = Math.trunc(speed) >= 2;
  const replicate = p.replicate as number;
  const request: GenerateRequestInit = {
    prompts,
    seed: BigInt(p.seed as number),
    numImagesPerPrompt: replicate,
    guidanceScale: p.guidance_scale as number,
    truncationRate: p.truncation_rate as number,
    sampler: {
      kind: SamplerKind.VQ_DIFFUSION,
      speed,
      prior: fast ? UnmaskPrior.NONE : [UnmaskPrior.NONE, UnmaskPrior.HIGH_QUALITY, UnmaskPrior.PURITY][p.prior_rule as number]!,
      priorWeight: fast ? 0 : (p.prior_weight as number),
      unmaskSchedule: !fast && Array.isArray(c.n_sample) ? (c.n_sample as number[]) : [],
      classifierFreeEmbeddings: p.learnable_cf ? ClassifierFreeEmbeddings.LEARNED : ClassifierFreeEmbeddings.EMPTY_PROMPT,
    },
  };
  const rows: number[] = [];
  for (let q = 0; q < prompts.length; q++) for (let k = 0; k < replicate; k++) rows.push(k * prompts.length + q);
  return { request, rows };
}

function assertWithinDecoderRounding(expected: number[], png: Uint8Array, what: string): void {
  const decoded = PNG.sync.read(Buffer.from(png));
  const rgb: number[] = [];
  for (let i = 0; i < decoded.data.length; i += 4) rgb.push(decoded.data[i]!, decoded.data[i + 1]!, decoded.data[i + 2]!);
  assert.equal(rgb.length, expected.length, what);
  let differing = 0;
  for (let i = 0; i < rgb.length; i++) {
    const d = Math.abs(rgb[i]! - expected[i]!);
    assert.ok(d <= 1, `${what}: value ${i} differs by ${d}`);
    if (d > 0) differing++;
  }
  assert.ok(differing < 0.005 * rgb.length, `${what}: ${differing} values differ`);
}

function goldenImage(golden: Record<string, Tensor>, row: number): number[] {
  const { shape, values } = golden.images_uint8_nhwc!;
  const size = shape[1]! * shape[2]! * shape[3]!;
  return values.slice(row * size, (row + 1) * size);
}

let server: TestServer;

before(async () => {
  server = await startServer(120_000, modelDir());
});

after(async () => {
  await server?.stop();
});

for (const name of Object.keys(MANIFEST.cases).sort()) {
  test(`improved-tiny ${name}: the original's tokens after every step, timesteps and pixels`, async () => {
    const c = MANIFEST.cases[name]!;
    const golden = readSafetensors(join(GOLDEN, c.file));
    const { request, rows } = caseRequest(name);
    const stepT = golden.step_t!.values;
    const [steps, batch, pixels] = golden.step_tokens!.shape as [number, number, number];
    const events: GenerateEvent[] = [];
    for await (const ev of server.client.generate({ ...request, snapshots: { everyNSteps: 1, includeTokens: true } })) events.push(ev);

    const started = events.find((e) => e.type === "started");
    assert.ok(started?.type === "started");
    assert.equal(started.sampler, SamplerKind.VQ_DIFFUSION);
    assert.equal(started.totalSteps, c.num_steps);
    const progress = events.filter((e) => e.type === "progress");
    assert.deepEqual(progress.map((p) => p.timestep), stepT);
    assert.ok(progress.every((p) => p.totalSteps === steps));
    const snapshots = events.filter((e) => e.type === "snapshot");
    assert.equal(snapshots.length, steps * batch);
    const tokens = golden.step_tokens!.values;
    for (let s = 0; s < steps; s++) {
      rows.forEach((row, i) => {
        const expected = tokens.slice((s * batch + row) * pixels, (s * batch + row + 1) * pixels);
        assert.deepEqual(snapshots[s * batch + i]!.tokens, expected, `${name}: step ${s} image ${i}`);
      });
    }
    const images = events.filter((e) => e.type === "image");
    assert.deepEqual(images.map((i) => i.index), rows.map((_, i) => i));
    rows.forEach((row, i) => assertWithinDecoderRounding(goldenImage(golden, row), images[i]!.data, `${name} image ${i}`));
  });
}

test("getModelInfo lists both samplers with their speeds and default schedules", async () => {
  const info = await server.client.getModelInfo();
  assert.deepEqual(info.samplers.map((s) => s.name), ["diffusers", "vq-diffusion"]);
  const vq = info.samplers[1]!;
  assert.ok(vq.speeds.some((s) => s.speed === 2 && s.networkCalls === 51));
  assert.equal(vq.defaultUnmaskSchedules.length, 2);
});

test("inpainting keeps the source outside the mask; bad edit fields are named", async () => {
  const source = Array.from({ length: 64 }, (_, p) => (p * 5) % 64);
  const mask = Array.from({ length: 64 }, (_, p) => Math.floor(p / 8) >= 4);
  const snapshots: number[][] = [];
  for await (const ev of server.client.generate({
    prompts: ["a red car"], numInferenceSteps: 5, seed: 2n, edit: { sourceTokens: source, mask }, snapshots: { everyNSteps: 1, includeTokens: true },
  })) {
    if (ev.type === "snapshot") snapshots.push(ev.tokens);
  }
  assert.equal(snapshots.length, 5);
  for (const s of snapshots) for (let p = 0; p < 64; p++) if (!mask[p]) assert.equal(s[p], source[p]);

  for (const [edit, field] of [
    [{ sourceTokens: Array(64).fill(64), strength: 0.5 }, "edit.source_tokens[0]"],
    [{ sourceImage: new Uint8Array([1, 2, 3]), strength: 0.5 }, "edit.source_image"],
    [{ sourceTokens: source }, "edit.strength"],
  ] as const) {
    await assert.rejects(server.client.generateImages({ prompts: ["a"], edit }), (err: unknown) => {
      assert.ok(err instanceof VqDiffusionError, String(err));
      assert.equal(err.codeName, "INVALID_ARGUMENT");
      assert.equal(err.fieldViolations[0]!.field, field);
      return true;
    });
  }
});

test("cross-client output: the vq-diffusion request's PNG bytes (written when VQD_CROSS_CLIENT_OUT is set)", async () => {
  const images = await server.client.generateImages({
    prompts: ["a photo of a cat", "a red car"],
    guidanceScale: 3,
    truncationRate: 0.9,
    seed: 123n,
    sampler: { kind: SamplerKind.VQ_DIFFUSION, speed: 4 },
    edit: { sourceTokens: Array.from({ length: 128 }, (_, i) => (i * 5) % 64), mask: Array.from({ length: 64 }, (_, p) => Math.floor(p / 8) >= 4) },
  });
  assert.deepEqual(images.map((i) => i.index), [0, 1]);
  const target = process.env.VQD_CROSS_CLIENT_OUT;
  if (target) images.forEach((image, k) => writeFileSync(`${target}.vq.${k}`, image.data));
});

function exampleFlags(name: string, dir: string): string[] {
  const { request } = caseRequest(name);
  const flags: string[] = [];
  for (const p of request.prompts ?? []) flags.push("--prompt", p);
  flags.push("--seed", String(request.seed), "--sampler", "vq-diffusion");
  if (request.numImagesPerPrompt) flags.push("--images-per-prompt", String(request.numImagesPerPrompt));
  if (request.guidanceScale !== undefined) flags.push("--guidance-scale", String(request.guidanceScale));
  if (request.truncationRate !== undefined) flags.push("--truncation-rate", String(request.truncationRate));
  const s = request.sampler!;
  if (s.speed !== undefined) flags.push("--speed", String(s.speed));
  if (s.prior) flags.push("--prior", { [UnmaskPrior.NONE]: "none", [UnmaskPrior.HIGH_QUALITY]: "high-quality", [UnmaskPrior.PURITY]: "purity" }[s.prior]!);
  if (s.priorWeight) flags.push("--prior-weight", String(s.priorWeight));
  if (s.classifierFreeEmbeddings) flags.push("--cf-embeddings", s.classifierFreeEmbeddings === ClassifierFreeEmbeddings.LEARNED ? "learned" : "empty-prompt");
  if (s.unmaskSchedule && s.unmaskSchedule.length > 0) {
    writeFileSync(join(dir, "schedule.json"), JSON.stringify(s.unmaskSchedule));
    flags.push("--unmask-schedule", join(dir, "schedule.json"));
  }
  if (request.edit) {
    const tokens = request.edit.sourceTokens!;
    const perImage = tokens.length / request.prompts!.length;
    const rows = Array.from({ length: request.prompts!.length }, (_, i) => tokens.slice(i * perImage, (i + 1) * perImage));
    writeFileSync(join(dir, "source.json"), JSON.stringify(rows));
    flags.push("--edit-tokens", join(dir, "source.json"), "--strength", String(request.edit.strength));
  }
  return flags;
}

for (const name of ["fast_time2_g5", "purity_r1_t086", "edit_fr05"]) {
  test(`the example reproduces ${name}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "vqd-example-vq-"));
    try {
      const out = join(dir, "out");
      const r = await runExample(["--server", server.address, ...exampleFlags(name, dir), "--output", out]);
      assert.equal(r.code, 0, r.stderr);
      const steps = MANIFEST.cases[name]!.num_steps;
      assert.match(r.stderr, new RegExp(`${steps}/${steps} t=`));
      const golden = readSafetensors(join(GOLDEN, MANIFEST.cases[name]!.file));
      caseRequest(name).rows.forEach((row, i) =>
        assertWithinDecoderRounding(goldenImage(golden, row), readFileSync(join(out, `${String(i).padStart(3, "0")}.png`)), `${name} ${i}`),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("the example rejects bad sampler flags with exit 2 and names INVALID_ARGUMENT fields", async () => {
  const bad = await runExample(["--server", server.address, "--prompt", "x", "--sampler", "ddim", "--output", "unused"]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "error: --sampler must be diffusers or vq-diffusion, got 'ddim'.\n");
  const orphan = await runExample(["--server", server.address, "--prompt", "x", "--strength", "0.5", "--output", "unused"]);
  assert.equal(orphan.code, 2);
  assert.match(orphan.stderr, /give --edit-tokens FILE or --edit-image FILE/);
  const invalid = await runExample(["--server", server.address, "--prompt", "x", "--sampler", "vq-diffusion", "--speed", "0", "--output", "unused"]);
  assert.equal(invalid.code, 2);
  assert.match(invalid.stderr, /^error: --speed: sampler\.speed must be/);
});
