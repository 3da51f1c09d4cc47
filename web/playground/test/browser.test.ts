// The playground in a real browser: Debian's chromium (/usr/bin/chromium, or $VQD_CHROMIUM) driven by playwright-core,
// headless, against the real server on loopback ports. Screenshots go to $VQD_BROWSER_ARTIFACTS (or test-results/).
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { VqDiffusionClient } from "../../../clients/typescript/src/index.js";
import { artifactsDir, startWebServer, type WebTestServer } from "./server.js";

const CHROMIUM = process.env.VQD_CHROMIUM || "/usr/bin/chromium";
let server: WebTestServer;
let browser: Browser;
const artifacts = artifactsDir();

before(async () => {
  [server, browser] = await Promise.all([
    // One run at a time, so that a second request waits in the queue (the queue test).
    startWebServer(["--Generation:MaxActiveRuns=1"]),
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] }),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function openPage(address = server.webAddress, viewport = { width: 1280, height: 900 }): Promise<Page> {
  const page = await browser.newPage({ viewport });
  page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
  await page.goto(address);
  return page;
}

async function waitForModelInfo(page: Page): Promise<void> {
  await page.waitForFunction(() => /latent grid/.test(document.getElementById("model-info")!.textContent ?? ""), null, { timeout: 30_000 });
}

/** Records every text the step line and the image captions show, and every preview source, from now on. */
async function record(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { steps: string[]; captions: string[]; sources: string[] };
    w.steps = [];
    w.captions = [];
    w.sources = [];
    new MutationObserver((records) => {
      for (const r of records) {
        const target = r.target as HTMLElement;
        if (r.type === "attributes" && target instanceof HTMLImageElement && target.closest(".image-card")) {
          if (!target.closest(".final")) w.sources.push(target.getAttribute("src") ?? "");
        } else if (r.type === "childList") {
          const text = Array.from(r.addedNodes).map((n) => n.textContent ?? "").join("");
          if (target.id === "step" && text) w.steps.push(text);
          else if (target.classList?.contains("caption") && text) w.captions.push(text);
        }
      }
    }).observe(document.getElementById("run")!, { subtree: true, childList: true, attributes: true, attributeFilter: ["src"] });
  });
}

async function setForm(page: Page, values: Record<string, string>): Promise<void> {
  for (const [id, value] of Object.entries(values)) await page.fill(`#${id}`, value);
}

test("the page shows the model info, and fits a phone's width", async () => {
  const page = await openPage(server.webAddress, { width: 390, height: 844 });
  await waitForModelInfo(page);
  const text = await page.textContent("#model-info");
  assert.match(text!, /latent grid 8×8 · images 32×32 · T = 100 · cpu, float32/);
  assert.match(text!, /limits: 16 prompts/);
  assert.equal(await page.getAttribute("#steps", "placeholder"), "100");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
  // Keyboard: the first Tab stops are the form's fields in reading order.
  await page.focus("#prompts");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "steps");
  await page.screenshot({ path: join(artifacts, "phone.png"), fullPage: true });
  await page.close();
});

test("Enter generates: one progress line per step, live previews, a final image equal to the gRPC one", async () => {
  const page = await openPage();
  await waitForModelInfo(page);
  await setForm(page, { prompts: "teddy bear playing in the pool", steps: "12", truncation: "0.86", seed: "42", "snapshot-every": "1" });
  await record(page);
  await page.focus("#steps");
  await page.keyboard.press("Enter");
  await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
  assert.equal(await page.textContent("#error"), "");

  const { steps, captions, sources } = await page.evaluate(() => {
    const w = window as unknown as { steps: string[]; captions: string[]; sources: string[] };
    return { steps: w.steps, captions: w.captions, sources: w.sources };
  });
  assert.equal(steps.length, 12, steps.join("\n"));
  steps.forEach((s, i) => assert.match(s, new RegExp(`^Step ${i + 1} / 12 · timestep ${11 - i} · `)));
  assert.equal(await page.evaluate(() => (document.getElementById("progress") as HTMLProgressElement).value), 12);

  // The preview changed at every step (a new image each time, fewer masked tokens as the chain goes on).
  const previews = captions.filter((c) => / masked$/.test(c));
  assert.equal(previews.length, 12, captions.join("\n"));
  const masked = previews.map((c) => Number(/(\d+) masked$/.exec(c)![1]));
  assert.ok(masked[0] > masked[masked.length - 1], `masked tokens per step: ${masked.join(", ")}`);
  assert.equal(masked[masked.length - 1], 0);
  assert.ok(new Set(sources.filter((s) => s)).size >= 12, `preview sources: ${sources.length}`);

  assert.match((await page.textContent("#seed-used"))!, /Seed used: 42/);
  assert.match((await page.textContent("#parameters"))!, /seed42/);
  const link = await page.getAttribute(".image-card.final a.download", "download");
  assert.equal(link, "vqd-42-0.png");
  const bytes = await page.evaluate(async () => {
    const a = document.querySelector<HTMLAnchorElement>(".image-card.final a.download")!;
    return Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer()));
  });
  await page.screenshot({ path: join(artifacts, "done.png"), fullPage: true });

  const grpc = new VqDiffusionClient(server.grpcAddress);
  try {
    const [image] = await grpc.generateImages({
      prompts: ["teddy bear playing in the pool"], numInferenceSteps: 12, truncationRate: 0.86, seed: 42n,
      numImagesPerPrompt: 1, imageFormat: 1, snapshots: { everyNSteps: 1, includePreview: true, previewFormat: 1 },
    });
    assert.deepEqual(Buffer.from(bytes), Buffer.from(image.data));
  } finally {
    grpc.close();
  }
  await page.close();
});

test("Random lets the server pick the seed and shows the one used", async () => {
  const page = await openPage();
  await waitForModelInfo(page);
  await setForm(page, { seed: "5", steps: "2" });
  await page.click("#random-seed");
  assert.equal(await page.inputValue("#seed"), "");
  await page.click("#generate-button");
  await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
  const used = /Seed used: (\d+)/.exec((await page.textContent("#seed-used"))!);
  assert.ok(used, "the seed used is shown");
  assert.equal(await page.getAttribute(".image-card.final a.download", "download"), `vqd-${used![1]}-0.png`);
  await page.close();
});

test("Escape cancels a long run and the server stops it", async () => {
  const page = await openPage();
  await waitForModelInfo(page);
  await setForm(page, { prompts: "teddy bear playing in the pool\na red car", steps: "100", images: "2", truncation: "0.86", seed: "7", "snapshot-every": "1", "request-id": "browser-cancel" });
  await page.click("#generate-button");
  await page.waitForFunction(() => (document.getElementById("progress") as HTMLProgressElement).value >= 12, null, { timeout: 60_000 });
  // The README's picture of the page mid-run (docs/playground.png is a copy of this one).
  await page.screenshot({ path: join(artifacts, "generating.png"), clip: { x: 0, y: 0, width: 1280, height: 720 } });
  await page.keyboard.press("Escape");
  await page.waitForSelector("body[data-state=cancelled]", { timeout: 30_000 });
  assert.equal(await page.textContent("#status"), "Cancelled.");
  const stoppedAt = await page.evaluate(() => (document.getElementById("progress") as HTMLProgressElement).value);
  assert.ok(stoppedAt < 100, `stopped at step ${stoppedAt}`);
  assert.equal(await page.isDisabled("#cancel-button"), true);
  assert.equal(await page.isEnabled("#generate-button"), true);
  const until = Date.now() + 20_000;
  while (!/Request browser-cancel ended by the client/.test(server.log()) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  assert.match(server.log(), /Request browser-cancel ended by the client/);
  await page.close();
});

test("a request behind another one shows its queue position, then runs", async () => {
  const first = await openPage();
  const second = await openPage();
  await Promise.all([waitForModelInfo(first), waitForModelInfo(second)]);
  await setForm(first, { steps: "100", images: "4", "snapshot-every": "1" });
  await first.click("#generate-button");
  await first.waitForFunction(() => (document.getElementById("progress") as HTMLProgressElement).value >= 1, null, { timeout: 60_000 });
  await setForm(second, { steps: "3", seed: "9" });
  await second.click("#generate-button");
  await second.waitForFunction(() => /^Queued: position 1 of 1\.$/.test(document.getElementById("status")!.textContent ?? ""), null, { timeout: 30_000 });
  await second.screenshot({ path: join(artifacts, "queued.png") });
  await first.click("#cancel-button");
  await first.waitForSelector("body[data-state=cancelled]", { timeout: 30_000 });
  await second.waitForSelector("body[data-state=done]", { timeout: 60_000 });
  assert.match((await second.textContent("#parameters"))!, /queue wait/);
  await Promise.all([first.close(), second.close()]);
});

test("a bad value is shown next to the field the BadRequest violation names", async () => {
  const page = await openPage();
  await waitForModelInfo(page);
  await setForm(page, { truncation: "2", steps: "3" });
  await page.click("#generate-button");
  await page.waitForSelector("body[data-state=error]", { timeout: 30_000 });
  const error = (await page.textContent('.field-error[data-field="truncation_rate"]'))!;
  assert.match(error, /truncation_rate must be/);
  assert.equal(await page.getAttribute("#truncation", "aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "truncation");
  assert.match((await page.textContent("#error"))!, /^INVALID_ARGUMENT: /);
  await page.screenshot({ path: join(artifacts, "field-error.png") });

  // Another field (in the closed Sampler section, which opens), then a good value clears the errors.
  await setForm(page, { truncation: "", steps: "" });
  await page.click("#sampler-options summary");
  await page.selectOption("#sampler", "2");
  await page.fill("#speed", "-1");
  await page.click("#generate-button");
  await page.waitForSelector("body[data-state=error]", { timeout: 30_000 });
  assert.match((await page.textContent('.field-error[data-field="sampler.speed"]'))!, /sampler\.speed/, (await page.textContent("#error"))!);
  assert.equal(await page.evaluate(() => (document.getElementById("sampler-options") as HTMLDetailsElement).open), true);
  await setForm(page, { speed: "", steps: "3" });
  await page.selectOption("#sampler", "1");
  await page.click("#generate-button");
  await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
  assert.equal(await page.textContent('.field-error[data-field="truncation_rate"]'), "");
  assert.equal(await page.textContent("#error"), "");
  await page.close();
});

test("inpainting: a painted mask on an uploaded source regenerates part of it", async () => {
  const page = await openPage();
  await waitForModelInfo(page);
  // A source image: the first result of a short run, uploaded as a file.
  const grpc = new VqDiffusionClient(server.grpcAddress);
  let source: Uint8Array;
  try {
    [{ data: source }] = await grpc.generateImages({ prompts: ["a red car"], numInferenceSteps: 5, seed: 3n });
  } finally {
    grpc.close();
  }
  await page.click("#edit-options summary");
  await page.setInputFiles("#source-image", { name: "source.png", mimeType: "image/png", buffer: Buffer.from(source) });
  await page.locator("#mask-canvas").scrollIntoViewIfNeeded();
  const box = (await page.locator("#mask-canvas").boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.8, { steps: 8 });
  await page.mouse.up();
  assert.equal(await page.isChecked("#use-mask"), true);
  await setForm(page, { prompts: "a cute puppy", steps: "10", seed: "1", "snapshot-every": "0" });
  await page.click("#generate-button");
  await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
  assert.equal(await page.textContent("#error"), "");
  assert.equal(await page.locator(".image-card.final").count(), 1);
  await page.screenshot({ path: join(artifacts, "inpaint.png"), fullPage: true });

  // The same inpainting through the gRPC client (the source file, the painted strokes as a white-on-black PNG) gives
  // the same bytes: the page sent the source's pixels and the mask it shows.
  const { finalBytes, maskBytes, paintedPixels } = await page.evaluate(async () => {
    const a = document.querySelector<HTMLAnchorElement>(".image-card.final a.download")!;
    const finalBytes = Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer()));
    const canvas = document.getElementById("mask-canvas") as HTMLCanvasElement;
    const painted = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height);
    const mask = new ImageData(canvas.width, canvas.height);
    let paintedPixels = 0;
    for (let i = 0; i < painted.data.length; i += 4) {
      const v = painted.data[i + 3] >= 128 ? 255 : 0;
      if (v) paintedPixels++;
      mask.data[i] = mask.data[i + 1] = mask.data[i + 2] = v;
      mask.data[i + 3] = 255;
    }
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    out.getContext("2d")!.putImageData(mask, 0, 0);
    const blob = await new Promise<Blob | null>((resolve) => out.toBlob(resolve, "image/png"));
    return { finalBytes, maskBytes: Array.from(new Uint8Array(await blob!.arrayBuffer())), paintedPixels };
  });
  assert.ok(paintedPixels > 20 && paintedPixels < 32 * 32 / 2, `painted pixels: ${paintedPixels}`);
  const viaGrpc = new VqDiffusionClient(server.grpcAddress);
  try {
    const [image] = await viaGrpc.generateImages({
      prompts: ["a cute puppy"], numInferenceSteps: 10, seed: 1n, numImagesPerPrompt: 1, imageFormat: 1,
      edit: { sourceImage: source, maskImage: Uint8Array.from(maskBytes) },
    });
    assert.deepEqual(Buffer.from(finalBytes), Buffer.from(image.data));
    const [unmasked] = await viaGrpc.generateImages({ prompts: ["a cute puppy"], numInferenceSteps: 10, seed: 1n });
    assert.notDeepEqual(Buffer.from(finalBytes), Buffer.from(unmasked.data));
  } finally {
    viaGrpc.close();
  }
  await page.close();
});

test("with authentication the page asks for the API key and sends it as a Bearer token", async () => {
  // A second server with an API key (Auth:ApiKeys): its gRPC-Web calls go through the same authentication as gRPC.
  const key = "browser-key-0123456789abcdef";
  const secured = await startWebServer([`--Auth:ApiKeys:browser=${key}`]);
  try {
    const page = await openPage(secured.webAddress);
    await page.waitForSelector("#auth:not([hidden])", { timeout: 30_000 });
    assert.equal(await page.getAttribute("#api-key", "type"), "password");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "api-key");
    await page.fill("#api-key", key);
    await page.keyboard.press("Enter");
    await waitForModelInfo(page);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("vqd-api-key")), key);
    await setForm(page, { steps: "2" });
    await page.click("#generate-button");
    await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
    // The server refused the first GetModelInfo (no credentials) and served the calls with the key.
    assert.match(secured.log(), /Rejected \/vqdiffusion\.v1\.VqDiffusionService\/GetModelInfo from .* with UNAUTHENTICATED: no credentials/);
    assert.doesNotMatch(secured.log(), new RegExp(key));

    // A reload keeps the key (same tab), and a key that stops working brings the field back.
    await page.reload();
    await waitForModelInfo(page);
    await page.evaluate(() => sessionStorage.setItem("vqd-api-key", "wrong-key-0123456789abcdef"));
    await page.click("#generate-button");
    await page.waitForSelector("#auth:not([hidden])", { timeout: 30_000 });
    assert.match((await page.textContent("#auth-error"))!, /not accepted/);
    assert.match((await page.textContent("#error"))!, /^UNAUTHENTICATED: the API key is not valid/);
    await page.close();
  } finally {
    await secured.stop();
  }
});
