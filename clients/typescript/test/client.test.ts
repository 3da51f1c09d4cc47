// Tests of the TypeScript client against a real server process (node's built-in test runner).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ImageFormat, VqDiffusionClient, VqDiffusionError, type GenerateEvent } from "../src/index.js";
import { assertSamePixels } from "./pixels.js";
import { runExample } from "./example.js";
import { REPO_ROOT, startServer, type TestServer } from "./server.js";

const GOLDEN = join(REPO_ROOT, "tests/fixtures/tiny-ithq/golden/png/pipeline_single_cfg_0.png");

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

test("getModelInfo describes the tiny test model", async () => {
  const info = await server.client.getModelInfo();
  assert.equal(info.modelId, "tiny-ithq");
  assert.equal(info.latentHeight, 8);
  assert.equal(info.latentWidth, 8);
  assert.equal(info.imageWidth, 32);
  assert.equal(info.imageHeight, 32);
  assert.equal(info.numVectorEmbeds, info.numCodes + 1);
  assert.equal(info.defaultNumInferenceSteps, 100);
  assert.ok(info.limits && info.limits.maxBatchSize >= 16);
});

test("a full generation streams started, every step's progress in order, the image and completed; the PNG matches diffusers", async () => {
  const events: GenerateEvent[] = [];
  for await (const ev of server.client.generate({
    prompts: ["a photo of a cat"],
    numInferenceSteps: 10,
    guidanceScale: 5,
    truncationRate: 1.0,
    seed: 0n,
  })) {
    events.push(ev);
  }
  const types = events.map((e) => e.type).filter((t) => t !== "queued");
  assert.deepEqual(types, ["started", ...Array(10).fill("progress"), "image", "completed"]);

  const started = events.find((e) => e.type === "started");
  assert.ok(started?.type === "started");
  assert.equal(started.seed, 0n);
  assert.equal(started.numInferenceSteps, 10);
  assert.deepEqual(started.timesteps, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);

  const progress = events.filter((e) => e.type === "progress");
  assert.deepEqual(progress.map((p) => p.completedSteps), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(progress.map((p) => p.timestep), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  assert.ok(progress.every((p) => p.totalSteps === 10));
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.elapsedMs >= progress[i - 1]!.elapsedMs);

  const image = events.find((e) => e.type === "image");
  assert.ok(image?.type === "image");
  assert.equal(image.index, 0);
  assert.equal(image.promptIndex, 0);
  assert.equal(image.mimeType, "image/png");
  assert.equal(image.width, 32);
  assert.equal(image.height, 32);
  assert.equal(image.seed, 0n);
  assertSamePixels(image.data, GOLDEN);

  const completed = events.at(-1);
  assert.ok(completed?.type === "completed");
  assert.equal(completed.numImages, 1);
  assert.equal(completed.droppedEvents, 0); // this client kept up
});

test("generateImages returns the images in batch order and reports progress", async () => {
  const steps: number[] = [];
  const images = await server.client.generateImages(
    { prompts: ["a photo of a cat", "a red car"], numInferenceSteps: 4, numImagesPerPrompt: 2, seed: 7, imageFormat: ImageFormat.JPEG },
    { onProgress: (p) => steps.push(p.completedSteps) },
  );
  assert.deepEqual(steps, [1, 2, 3, 4]);
  assert.deepEqual(images.map((i) => [i.index, i.promptIndex]), [[0, 0], [1, 0], [2, 1], [3, 1]]);
  assert.ok(images.every((i) => i.mimeType === "image/jpeg" && i.data[0] === 0xff && i.data[1] === 0xd8));
});

test("aborting the AbortSignal cancels the call mid-stream; the next request succeeds", async () => {
  const controller = new AbortController();
  let progress = 0;
  let images = 0;
  const startedAt = Date.now();
  await assert.rejects(
    (async () => {
      for await (const ev of server.client.generate(
        { prompts: ["a photo of a cat", "a red car"], numInferenceSteps: 100, numImagesPerPrompt: 8, seed: 1n },
        { signal: controller.signal },
      )) {
        if (ev.type === "progress" && ++progress === 3) controller.abort();
        if (ev.type === "image") images++;
      }
    })(),
    (err: unknown) => {
      assert.ok(err instanceof VqDiffusionError, String(err));
      assert.equal(err.codeName, "CANCELLED");
      assert.equal(err.code, 1);
      return true;
    },
  );
  assert.ok(progress >= 3 && progress < 100, `saw ${progress} progress events`);
  assert.equal(images, 0);

  // The model moves on: a normal request right after is served.
  const result = await server.client.generateImages({ prompts: ["a red car"], numInferenceSteps: 3, seed: 2n });
  assert.equal(result.length, 1);
  assert.ok(Date.now() - startedAt < 60_000);

  // An already-aborted signal never starts a call.
  await assert.rejects(server.client.getModelInfo({ signal: AbortSignal.abort() }), (err: unknown) => {
    return err instanceof VqDiffusionError && err.codeName === "CANCELLED";
  });
});

test("an invalid request rejects with INVALID_ARGUMENT and the BadRequest field violation", async () => {
  await assert.rejects(
    server.client.generateImages({ prompts: ["a photo of a cat"], truncationRate: 2 }),
    (err: unknown) => {
      assert.ok(err instanceof VqDiffusionError, String(err));
      assert.equal(err.code, 3);
      assert.equal(err.codeName, "INVALID_ARGUMENT");
      assert.match(err.details, /truncation_rate/);
      assert.ok(err.fieldViolations.length >= 1);
      assert.equal(err.fieldViolations[0]!.field, "truncation_rate");
      assert.ok(err.fieldViolations[0]!.description.length > 0);
      return true;
    },
  );
});

test("a 50 ms deadline ends a long call with DEADLINE_EXCEEDED", async () => {
  await assert.rejects(
    server.client.generateImages({ prompts: ["a photo of a cat"], numInferenceSteps: 100, numImagesPerPrompt: 8 }, { deadline: Date.now() + 50 }),
    (err: unknown) => err instanceof VqDiffusionError && err.codeName === "DEADLINE_EXCEEDED",
  );
});

test("the example writes 000.png with the pixels of diffusers' image", async () => {
  const out = mkdtempSync(join(tmpdir(), "vqd-example-"));
  try {
    const r = await runExample([
      "--server", server.address, "--prompt", "a photo of a cat", "--steps", "10",
      "--guidance-scale", "5", "--truncation-rate", "1.0", "--seed", "0", "--output", out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /10\/10 t=0 /);
    assert.match(r.stderr, /seed: 0; wrote 1 image\(s\)/);
    assertSamePixels(readFileSync(join(out, "000.png")), GOLDEN);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the example writes several images in batch order, with latents from a JSON file", async () => {
  const out = mkdtempSync(join(tmpdir(), "vqd-example-"));
  try {
    const info = await server.client.getModelInfo();
    const cells = info.latentHeight * info.latentWidth;
    const mask = info.numVectorEmbeds - 1;
    const latents = [Array(cells).fill(mask), Array.from({ length: cells }, (_, i) => (i < cells / 2 ? i % info.numCodes : mask))];
    writeFileSync(join(out, "latents.json"), JSON.stringify(latents));
    const r = await runExample([
      "--server", server.address, "--prompt", "a photo of a cat", "--prompt=a red car", "--steps", "3",
      "--seed", "5", "--latents", join(out, "latents.json"), "--format", "webp", "--quality", "80", "--output", out, "--quiet",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const a = readFileSync(join(out, "000.webp"));
    const b = readFileSync(join(out, "001.webp"));
    assert.equal(a.subarray(8, 12).toString(), "WEBP");
    assert.equal(b.subarray(8, 12).toString(), "WEBP");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the example exits 2 with one error line for bad flags and INVALID_ARGUMENT", async () => {
  const bad = await runExample(["--server", server.address, "--prompt", "x", "--steps", "ten", "--output", "unused"]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "error: --steps must be an integer, got 'ten'.\n");

  const missing = await runExample(["--server", server.address, "--output", "unused"]);
  assert.equal(missing.code, 2);
  assert.equal(missing.stderr, "error: at least one --prompt is required.\n");

  const invalid = await runExample(["--server", server.address, "--prompt", "x", "--truncation-rate", "2", "--output", "unused"]);
  assert.equal(invalid.code, 2);
  const lines = invalid.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, invalid.stderr);
  assert.match(lines[0]!, /^error: --truncation-rate: truncation_rate must be in \(0, 1\]/);
});

test("cross-client output: the standard request's PNG bytes (written when VQD_CROSS_CLIENT_OUT is set)", async () => {
  const images = await server.client.generateImages({
    prompts: ["a photo of a cat", "a red car"],
    numInferenceSteps: 7,
    guidanceScale: 3,
    truncationRate: 0.9,
    numImagesPerPrompt: 1,
    seed: 123n,
    imageFormat: ImageFormat.PNG,
  });
  assert.equal(images.length, 2);
  assert.deepEqual(images.map((i) => i.index), [0, 1]);
  for (const i of images) assert.deepEqual([...i.data.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const target = process.env.VQD_CROSS_CLIENT_OUT;
  if (target) {
    writeFileSync(target, Buffer.concat(images.map((i) => i.data)));
    images.forEach((image, k) => writeFileSync(`${target}.${k}`, image.data));
  }
});
