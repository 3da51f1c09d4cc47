// The playground page: a form for every GenerateRequest field, the stream's progress and live previews, the final
// images with their parameters. Plain DOM, no framework.
import { create } from "@bufbuild/protobuf";
import {
  ClassifierFreeEmbeddings,
  Code,
  EditOptionsSchema,
  GenerateRequestSchema,
  ImageFormat,
  SamplerKind,
  SamplerOptionsSchema,
  SnapshotOptionsSchema,
  UnmaskPrior,
  apiKey,
  callError,
  connect,
  setApiKey,
  type CallError,
  type GenerateRequest,
  type GetModelInfoResponse,
  type StartedEvent,
} from "./api.js";

const client = connect();

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`missing #${id}`);
  return found as T;
}

const form = el<HTMLFormElement>("generate");
const authForm = el<HTMLFormElement>("auth");
const keyInput = el<HTMLInputElement>("api-key");
const statusLine = el("status");
const progress = el<HTMLProgressElement>("progress");
const stepLine = el("step");
const errorBox = el("error");
const imagesOut = el("images-out");
const parametersOut = el("parameters");
const generateButton = el<HTMLButtonElement>("generate-button");
const cancelButton = el<HTMLButtonElement>("cancel-button");
const sourceCanvas = el<HTMLCanvasElement>("source-canvas");
const maskCanvas = el<HTMLCanvasElement>("mask-canvas");

let info: GetModelInfoResponse | undefined;
let running: AbortController | undefined;
let hasSource = false;
let urls: string[] = []; // object URLs of the current run, released when the next one starts
let retryGenerateAfterKey = false;

// ---------------------------------------------------------------------------------------------------------------
// Model info and the API key

async function loadModelInfo(): Promise<void> {
  try {
    info = await client.getModelInfo({});
  } catch (err) {
    const e = callError(err);
    if (e.code === Code.Unauthenticated) {
      askForKey(e, false);
      el("model-info").textContent = "The server needs an API key.";
      return;
    }
    el("model-info").textContent = `Cannot reach the service: ${e.codeName}: ${e.message}`;
    return;
  }
  showModelInfo(info);
}

function showModelInfo(m: GetModelInfoResponse): void {
  const l = m.limits;
  const parts = [
    `${m.modelId || m.modelPath}${m.isBuiltinTestModel ? " (built-in test model: meaningless images)" : ""}`,
    `latent grid ${m.latentHeight}×${m.latentWidth}`,
    `images ${m.imageWidth}×${m.imageHeight}`,
    `T = ${m.numTrainTimesteps}`,
    `${m.device}, ${m.dtype}`,
    l ? `limits: ${l.maxPrompts} prompts, ${l.maxImagesPerPrompt} images per prompt, ${l.maxBatchSize} per request, guidance ≤ ${l.maxGuidanceScale}, queue ${l.maxQueueLength}` : "",
    `server ${m.serverVersion}`,
  ];
  el("model-info").textContent = parts.filter((p) => p).join(" · ");
  el<HTMLInputElement>("steps").placeholder = `${m.defaultNumInferenceSteps}`;
  el<HTMLInputElement>("steps").max = `${m.numTrainTimesteps}`;
  el<HTMLInputElement>("guidance").placeholder = `${m.defaultGuidanceScale}`;
  el<HTMLInputElement>("truncation").placeholder = `${m.defaultTruncationRate}`;
  if (l) el<HTMLInputElement>("images").max = `${l.maxImagesPerPrompt}`;
  const vq = m.samplers.find((s) => s.kind === SamplerKind.VQ_DIFFUSION);
  if (vq) {
    el("speed-hint").textContent =
      `${vq.minSpeed} … ${vq.maxSpeed}; ` + vq.speeds.map((s) => `${s.speed}: ${s.networkCalls} calls`).join(", ");
  }
  for (const canvas of [sourceCanvas, maskCanvas]) {
    canvas.width = m.imageWidth;
    canvas.height = m.imageHeight;
  }
}

function askForKey(e: CallError, retryGenerate: boolean): void {
  authForm.hidden = false;
  el("auth-error").textContent = apiKey() ? `The key was not accepted: ${e.message}` : "";
  retryGenerateAfterKey ||= retryGenerate;
  keyInput.focus();
}

authForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setApiKey(keyInput.value.trim() || null);
  keyInput.value = "";
  authForm.hidden = true;
  if (!info) void loadModelInfo();
  if (retryGenerateAfterKey) {
    retryGenerateAfterKey = false;
    void generate();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Reading the form

class FieldProblem extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
  }
}

function value(id: string): string {
  return (el<HTMLInputElement>(id).value ?? "").trim();
}

function optionalNumber(id: string, field: string): number | undefined {
  const text = value(id);
  if (text === "") return undefined;
  const n = Number(text);
  if (!Number.isFinite(n)) throw new FieldProblem(field, `${field} must be a number, got '${text}'.`);
  return n;
}

function integer(id: string, field: string): number {
  const n = optionalNumber(id, field);
  if (n === undefined) return 0;
  if (!Number.isInteger(n)) throw new FieldProblem(field, `${field} must be a whole number, got ${n}.`);
  return n;
}

async function canvasPng(canvas: HTMLCanvasElement): Promise<Uint8Array> {
  const blob = await new Promise<Blob | null>((resolve) => canvas.toBlob(resolve, "image/png"));
  if (!blob) throw new Error("could not encode the canvas");
  return new Uint8Array(await blob.arrayBuffer());
}

async function maskPng(): Promise<Uint8Array> {
  // White = regenerate, black = keep: every pixel the strokes cover (at least half) is white.
  const out = document.createElement("canvas");
  out.width = maskCanvas.width;
  out.height = maskCanvas.height;
  const painted = maskCanvas.getContext("2d")!.getImageData(0, 0, maskCanvas.width, maskCanvas.height);
  const mask = new ImageData(out.width, out.height);
  for (let i = 0; i < painted.data.length; i += 4) {
    const v = painted.data[i + 3] >= 128 ? 255 : 0;
    mask.data[i] = mask.data[i + 1] = mask.data[i + 2] = v;
    mask.data[i + 3] = 255;
  }
  out.getContext("2d")!.putImageData(mask, 0, 0);
  return canvasPng(out);
}

async function readRequest(): Promise<GenerateRequest> {
  const prompts = el<HTMLTextAreaElement>("prompts").value.split("\n").map((p) => p.trim()).filter((p) => p !== "");
  const seedText = value("seed");
  if (seedText !== "" && !/^[0-9]+$/.test(seedText)) throw new FieldProblem("seed", `seed must be a whole number ≥ 0, got '${seedText}'.`);
  const every = integer("snapshot-every", "snapshots.every_n_steps");
  const request = create(GenerateRequestSchema, {
    prompts,
    numInferenceSteps: integer("steps", "num_inference_steps"),
    guidanceScale: optionalNumber("guidance", "guidance_scale"),
    truncationRate: optionalNumber("truncation", "truncation_rate"),
    numImagesPerPrompt: integer("images", "num_images_per_prompt"),
    seed: seedText === "" ? undefined : BigInt(seedText),
    imageFormat: Number(value("format")) as ImageFormat,
    imageQuality: integer("quality", "image_quality"),
    snapshots: create(SnapshotOptionsSchema, { everyNSteps: every, includePreview: every > 0, previewFormat: ImageFormat.PNG }),
    requestId: value("request-id"),
  });

  const kind = Number(value("sampler")) as SamplerKind;
  const speed = optionalNumber("speed", "sampler.speed");
  const prior = Number(value("prior")) as UnmaskPrior;
  const priorWeight = optionalNumber("prior-weight", "sampler.prior_weight") ?? 0;
  const scheduleText = value("unmask-schedule");
  const unmaskSchedule = scheduleText === "" ? [] : scheduleText.split(/[\s,]+/).filter((s) => s !== "").map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new FieldProblem("sampler.unmask_schedule", `sampler.unmask_schedule must be whole numbers, got '${s}'.`);
    return n;
  });
  const embeddings = Number(value("cf-embeddings")) as ClassifierFreeEmbeddings;
  if (kind !== SamplerKind.DIFFUSERS || speed !== undefined || prior !== UnmaskPrior.UNSPECIFIED || priorWeight !== 0
    || unmaskSchedule.length > 0 || embeddings !== ClassifierFreeEmbeddings.UNSPECIFIED) {
    request.sampler = create(SamplerOptionsSchema, { kind, speed, prior, priorWeight, unmaskSchedule, classifierFreeEmbeddings: embeddings });
  }

  const strength = optionalNumber("strength", "edit.strength");
  const useMask = el<HTMLInputElement>("use-mask").checked;
  if (hasSource || strength !== undefined || useMask) {
    request.edit = create(EditOptionsSchema, {
      sourceImage: hasSource ? await canvasPng(sourceCanvas) : new Uint8Array(),
      strength,
      maskImage: useMask ? await maskPng() : new Uint8Array(),
    });
  }
  return request;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors next to their fields

function clearErrors(): void {
  errorBox.textContent = "";
  for (const p of document.querySelectorAll<HTMLElement>(".field-error[data-field]")) p.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** The field's error line: `prompts[1]` → prompts, `sampler.unmask_schedule[3]` → sampler.unmask_schedule, then parents. */
function fieldErrorFor(path: string): HTMLElement | undefined {
  let p = path.replace(/\[\d+\]/g, "");
  for (;;) {
    const found = document.querySelector<HTMLElement>(`.field-error[data-field="${CSS.escape(p)}"]`);
    if (found) return found;
    const dot = p.lastIndexOf(".");
    if (dot < 0) return undefined;
    p = p.slice(0, dot);
  }
}

function showFieldError(field: string, description: string): boolean {
  const line = fieldErrorFor(field);
  if (!line) return false;
  line.textContent = line.textContent ? `${line.textContent} ${description}` : description;
  const container = line.closest(".field");
  const input = container?.querySelector<HTMLElement>("input, select, textarea");
  const details = line.closest("details");
  if (details) details.open = true;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", (line.id ||= `error-${field.replace(/[^a-z0-9]/gi, "-")}`));
    input.focus();
  }
  return true;
}

function showError(e: CallError): void {
  const placed = e.violations.filter((v) => showFieldError(v.field, v.description));
  const rest = e.violations.filter((v) => !placed.includes(v));
  errorBox.textContent = `${e.codeName}: ${e.message}` + rest.map((v) => `\n${v.field}: ${v.description}`).join("");
}

// ---------------------------------------------------------------------------------------------------------------
// The run

function setRunning(on: boolean): void {
  generateButton.disabled = on;
  cancelButton.disabled = !on;
}

function objectUrl(data: Uint8Array, mime: string): string {
  const url = URL.createObjectURL(new Blob([data as BlobPart], { type: mime }));
  urls.push(url);
  return url;
}

function seconds(d: { seconds: bigint; nanos: number } | undefined): string {
  if (!d) return "–";
  return `${(Number(d.seconds) + d.nanos / 1e9).toFixed(2)} s`;
}

const extensions: Record<string, string> = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

interface Card {
  root: HTMLElement;
  img: HTMLImageElement;
  caption: HTMLElement;
  previous: string | undefined;
}

function makeCards(started: StartedEvent): Card[] {
  imagesOut.replaceChildren();
  const cards: Card[] = [];
  const perPrompt = Math.max(1, started.numImagesPerPrompt);
  for (let i = 0; i < started.numImages; i++) {
    const root = document.createElement("figure");
    root.className = "image-card";
    root.dataset.index = `${i}`;
    root.style.margin = "0";
    const img = document.createElement("img");
    img.alt = `image ${i + 1}: waiting for the first preview`;
    img.width = info?.imageWidth ?? 256;
    img.height = info?.imageHeight ?? 256;
    const caption = document.createElement("figcaption");
    caption.className = "caption";
    const prompt = started.prompts[Math.floor(i / perPrompt)] ?? "";
    caption.textContent = `#${i + 1} · ${prompt}`;
    root.append(img, caption);
    imagesOut.append(root);
    cards.push({ root, img, caption, previous: undefined });
  }
  return cards;
}

function showParameters(started: StartedEvent, extra: [string, string][] = []): void {
  const samplerName = started.sampler === SamplerKind.VQ_DIFFUSION ? "vq-diffusion" : "diffusers";
  const priorName = { [UnmaskPrior.UNSPECIFIED]: "none", [UnmaskPrior.NONE]: "none", [UnmaskPrior.HIGH_QUALITY]: "high-quality", [UnmaskPrior.PURITY]: "purity" }[started.prior];
  const rows: [string, string][] = [
    ["request id", started.requestId],
    ["prompts", started.prompts.join(" | ")],
    ["seed", `${started.seed}`],
    ["steps", `${started.numInferenceSteps} (${started.totalSteps} transformer passes)`],
    ["timesteps", started.timesteps.length > 0 ? `${started.timesteps[0]} … ${started.timesteps[started.timesteps.length - 1]}` : "–"],
    ["guidance scale", `${started.guidanceScale}`],
    ["truncation rate", `${+started.truncationRate.toFixed(6)}`],
    ["images", `${started.numImages} (${started.numImagesPerPrompt} per prompt)`],
    ["format", ImageFormat[started.imageFormat] ?? `${started.imageFormat}`],
    ["sampler", `${samplerName}, speed ${started.speed}, prior ${priorName}`],
    ...(started.editStrength !== undefined ? [["edit strength", `${started.editStrength}`] as [string, string]] : []),
    ...extra,
  ];
  parametersOut.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

async function generate(): Promise<void> {
  if (running) return;
  clearErrors();
  document.body.dataset.state = "running";
  let request: GenerateRequest;
  try {
    request = await readRequest();
  } catch (err) {
    document.body.dataset.state = "error";
    if (err instanceof FieldProblem) {
      if (!showFieldError(err.field, err.message)) errorBox.textContent = err.message;
      return;
    }
    errorBox.textContent = String(err);
    return;
  }

  for (const url of urls) URL.revokeObjectURL(url);
  urls = [];
  imagesOut.replaceChildren();
  parametersOut.replaceChildren();
  el("seed-used").textContent = "";
  progress.value = 0;
  progress.max = 1;
  stepLine.textContent = "";
  statusLine.textContent = "Sending…";
  const abort = new AbortController();
  running = abort;
  setRunning(true);

  let cards: Card[] = [];
  let started: StartedEvent | undefined;
  let finals = 0;
  try {
    for await (const response of client.generate(request, { signal: abort.signal })) {
      const ev = response.event;
      switch (ev.case) {
        case "queued":
          statusLine.textContent = `Queued: position ${ev.value.position} of ${ev.value.queueLength}.`;
          break;
        case "started":
          started = ev.value;
          statusLine.textContent = `Generating ${ev.value.numImages} image${ev.value.numImages === 1 ? "" : "s"}…`;
          progress.max = Math.max(1, ev.value.totalSteps);
          el("seed-used").textContent = `Seed used: ${ev.value.seed}`;
          cards = makeCards(ev.value);
          showParameters(ev.value, [["queue wait", seconds(ev.value.queueWait)]]);
          break;
        case "progress":
          progress.max = Math.max(1, ev.value.totalSteps);
          progress.value = ev.value.completedSteps;
          stepLine.textContent = `Step ${ev.value.completedSteps} / ${ev.value.totalSteps} · timestep ${ev.value.timestep} · ${seconds(ev.value.elapsed)}`;
          break;
        case "snapshot": {
          const card = cards[ev.value.imageIndex];
          if (!card || ev.value.preview.length === 0) break;
          card.img.src = objectUrl(ev.value.preview, ev.value.previewMimeType || "image/png");
          card.img.alt = `image ${ev.value.imageIndex + 1}: preview at step ${ev.value.completedSteps}`;
          card.caption.textContent = `#${ev.value.imageIndex + 1} · step ${ev.value.completedSteps}, timestep ${ev.value.timestep} · ${ev.value.maskedCount} masked`;
          card.root.dataset.previewStep = `${ev.value.completedSteps}`;
          if (card.previous) URL.revokeObjectURL(card.previous);
          card.previous = card.img.src;
          break;
        }
        case "image": {
          const card = cards[ev.value.index];
          if (!card) break;
          const url = objectUrl(ev.value.data, ev.value.mimeType);
          card.img.src = url;
          card.previous = undefined;
          card.img.alt = `image ${ev.value.index + 1}, seed ${ev.value.seed}`;
          card.root.classList.add("final");
          card.root.dataset.final = "true";
          const prompt = started?.prompts[ev.value.promptIndex] ?? "";
          const link = document.createElement("a");
          link.href = url;
          link.download = `vqd-${ev.value.seed}-${ev.value.index}.${extensions[ev.value.mimeType] ?? "bin"}`;
          link.textContent = `Download ${link.download}`;
          link.className = "download";
          card.caption.textContent = `#${ev.value.index + 1} · ${prompt} · ${ev.value.width}×${ev.value.height} · seed ${ev.value.seed} `;
          card.caption.append(link);
          finals++;
          break;
        }
        case "completed":
          progress.value = progress.max;
          statusLine.textContent = `Done: ${finals} image${finals === 1 ? "" : "s"} in ${seconds(ev.value.generationTime)}.`;
          if (started) {
            showParameters(started, [
              ["queue wait", seconds(ev.value.queueWait)],
              ["generation", seconds(ev.value.generationTime)],
              ["mean step", seconds(ev.value.meanStepTime)],
              ["decode", seconds(ev.value.decodeTime)],
              ["dropped events", `${ev.value.droppedEvents}`],
            ]);
          }
          document.body.dataset.state = "done";
          break;
      }
    }
    if (document.body.dataset.state === "running") document.body.dataset.state = "done";
  } catch (err) {
    const e = callError(err);
    if (abort.signal.aborted || e.code === Code.Canceled) {
      statusLine.textContent = "Cancelled.";
      document.body.dataset.state = "cancelled";
    } else {
      statusLine.textContent = "Failed.";
      document.body.dataset.state = "error";
      showError(e);
      if (e.code === Code.Unauthenticated) askForKey(e, true);
    }
  } finally {
    running = undefined;
    setRunning(false);
  }
}

function cancel(): void {
  if (!running) return;
  statusLine.textContent = "Cancelling…";
  running.abort();
}

// ---------------------------------------------------------------------------------------------------------------
// Source image and mask painting

el<HTMLInputElement>("source-image").addEventListener("change", async (ev) => {
  const file = (ev.target as HTMLInputElement).files?.[0];
  const ctx = sourceCanvas.getContext("2d")!;
  ctx.clearRect(0, 0, sourceCanvas.width, sourceCanvas.height);
  hasSource = false;
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file);
    ctx.drawImage(bitmap, 0, 0, sourceCanvas.width, sourceCanvas.height);
    hasSource = true;
  } catch {
    showFieldError("edit.source_image", "This file is not an image the browser can read.");
  }
});

let painting = false;
function paint(ev: PointerEvent): void {
  const rect = maskCanvas.getBoundingClientRect();
  const x = ((ev.clientX - rect.left) / rect.width) * maskCanvas.width;
  const y = ((ev.clientY - rect.top) / rect.height) * maskCanvas.height;
  const radius = (Number(el<HTMLInputElement>("brush").value) * maskCanvas.width) / 64;
  const ctx = maskCanvas.getContext("2d")!;
  ctx.fillStyle = "#ff2e88";
  ctx.beginPath();
  ctx.arc(x, y, Math.max(0.5, radius), 0, Math.PI * 2);
  ctx.fill();
  el<HTMLInputElement>("use-mask").checked = true;
}
maskCanvas.addEventListener("pointerdown", (ev) => {
  painting = true;
  maskCanvas.setPointerCapture(ev.pointerId);
  paint(ev);
});
maskCanvas.addEventListener("pointermove", (ev) => painting && paint(ev));
maskCanvas.addEventListener("pointerup", () => (painting = false));
maskCanvas.addEventListener("pointercancel", () => (painting = false));
el("clear-mask").addEventListener("click", () => {
  maskCanvas.getContext("2d")!.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  el<HTMLInputElement>("use-mask").checked = false;
});

// ---------------------------------------------------------------------------------------------------------------
// Buttons and keys: Enter in a field (Ctrl+Enter in the prompts) generates, Escape cancels.

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  void generate();
});
cancelButton.addEventListener("click", cancel);
el("random-seed").addEventListener("click", () => {
  el<HTMLInputElement>("seed").value = "";
  el("seed-used").textContent = "The server picks a seed; it is shown here when the run starts.";
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && running) {
    ev.preventDefault();
    cancel();
  } else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && !running && form.contains(document.activeElement)) {
    ev.preventDefault();
    form.requestSubmit();
  }
});

document.body.dataset.state = "idle";
void loadModelInfo();
