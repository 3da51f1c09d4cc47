// `vqd generate` against a running server:
//   npm run example -- --server http://127.0.0.1:50051 --prompt "a photo of a cat" --seed 0 --output out/
// Same flags as `vqd generate` (minus the local-model ones); writes DIR/000.png, 001.png, ... in
// the server's batch order, a progress bar on stderr; bad input exits 2 with one `error: ...` line.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  ClassifierFreeEmbeddings,
  ImageFormat,
  SamplerKind,
  UnmaskPrior,
  VqDiffusionClient,
  VqDiffusionError,
  type GenerateRequestInit,
} from "../src/index.js";

const USAGE =
  "usage: generate --server URL --prompt TEXT [--prompt TEXT ...] [--steps N] [--guidance-scale G]\n" +
  "                [--truncation-rate R] [--images-per-prompt K] [--seed S] [--latents FILE]\n" +
  "                [--sampler diffusers|vq-diffusion] [--speed S] [--prior none|high-quality|purity]\n" +
  "                [--prior-weight W] [--unmask-schedule FILE] [--cf-embeddings learned|empty-prompt]\n" +
  "                [--edit-tokens FILE | --edit-image FILE] [--strength R] [--mask FILE]\n" +
  "                [--format png|jpeg|webp] [--quality Q] [--quiet] --output DIR\n" +
  "defaults (the server's): --steps 100 --guidance-scale 5.0 --truncation-rate 1.0 --images-per-prompt 1;\n" +
  "seed random (printed); format png; quality 90 (jpeg/webp).\n" +
  "Writes DIR/000.png, DIR/001.png, ... in batch order (prompt 0's images, then prompt 1's, ...).";

class UsageError extends Error {}

interface Options {
  server?: string;
  prompts: string[];
  steps?: number;
  guidanceScale?: number;
  truncationRate?: number;
  imagesPerPrompt?: number;
  seed?: bigint;
  latents?: string;
  format: "png" | "jpeg" | "webp";
  quality?: number;
  output?: string;
  quiet: boolean;
  sampler?: SamplerKind;
  speed?: number;
  prior?: UnmaskPrior;
  priorWeight?: number;
  unmaskSchedule?: string;
  cfEmbeddings?: ClassifierFreeEmbeddings;
  editTokens?: string;
  editImage?: string;
  strength?: number;
  mask?: string;
}

const SAMPLERS: Record<string, SamplerKind> = { diffusers: SamplerKind.DIFFUSERS, "vq-diffusion": SamplerKind.VQ_DIFFUSION };
const PRIORS: Record<string, UnmaskPrior> = { none: UnmaskPrior.NONE, "high-quality": UnmaskPrior.HIGH_QUALITY, purity: UnmaskPrior.PURITY };
const CF_EMBEDDINGS: Record<string, ClassifierFreeEmbeddings> = {
  learned: ClassifierFreeEmbeddings.LEARNED,
  "empty-prompt": ClassifierFreeEmbeddings.EMPTY_PROMPT,
};

function choice<T>(flag: string, value: string, table: Record<string, T>): T {
  const v = table[value.toLowerCase()];
  if (v === undefined) {
    const names = Object.keys(table);
    throw new UsageError(`${flag} must be ${names.slice(0, -1).join(", ")} or ${names.at(-1)}, got '${value}'.`);
  }
  return v;
}

const LOCAL_ONLY = new Set(["--model", "--device", "--dtype", "--variant"]);

function parseInt32(flag: string, v: string): number {
  if (!/^[+-]?\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Math.abs(Number(v)) > 2147483647) {
    throw new UsageError(`${flag} must be an integer, got '${v}'.`);
  }
  return Number(v);
}

function parseFloat32(flag: string, v: string): number {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v.trim())) {
    throw new UsageError(`${flag} must be a number, got '${v}'.`);
  }
  return Number(v.trim());
}

export function parseArgs(args: string[]): Options {
  const o: Options = { prompts: [], format: "png", quiet: false };
  for (let i = 0; i < args.length; i++) {
    let flag = args[i]!;
    let inline: string | undefined;
    const eq = flag.indexOf("=");
    if (flag.startsWith("--") && eq > 0) {
      inline = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const value = (): string => {
      if (inline !== undefined) return inline;
      if (i + 1 >= args.length) throw new UsageError(`${flag} needs a value.`);
      return args[++i]!;
    };
    switch (flag) {
      case "--server":
        o.server = value();
        break;
      case "--prompt":
        o.prompts.push(value());
        break;
      case "--steps":
        o.steps = parseInt32(flag, value());
        if (o.steps < 1) throw new UsageError(`--steps: num_inference_steps must be at least 1, got ${o.steps}.`);
        break;
      case "--guidance-scale":
        o.guidanceScale = parseFloat32(flag, value());
        break;
      case "--truncation-rate":
        o.truncationRate = parseFloat32(flag, value());
        break;
      case "--images-per-prompt":
        o.imagesPerPrompt = parseInt32(flag, value());
        if (o.imagesPerPrompt < 1) throw new UsageError(`--images-per-prompt must be at least 1, got ${o.imagesPerPrompt}.`);
        break;
      case "--seed": {
        const s = value();
        if (!/^\d+$/.test(s) || BigInt(s) > 18446744073709551615n) {
          throw new UsageError(`--seed must be an integer between 0 and 18446744073709551615, got '${s}'.`);
        }
        o.seed = BigInt(s);
        break;
      }
      case "--latents":
        o.latents = value();
        break;
      case "--format": {
        const f = value().toLowerCase();
        if (f === "png" || f === "webp") o.format = f;
        else if (f === "jpeg" || f === "jpg") o.format = "jpeg";
        else throw new UsageError(`--format must be png, jpeg or webp, got '${f}'.`);
        break;
      }
      case "--quality":
        o.quality = parseInt32(flag, value());
        if (o.quality < 1 || o.quality > 100) throw new UsageError(`--quality must be between 1 and 100, got ${o.quality}.`);
        break;
      case "--output":
        o.output = value();
        break;
      case "--quiet":
        o.quiet = true;
        break;
      case "--sampler":
        o.sampler = choice(flag, value(), SAMPLERS);
        break;
      case "--speed":
        o.speed = parseFloat32(flag, value());
        break;
      case "--prior":
        o.prior = choice(flag, value(), PRIORS);
        break;
      case "--prior-weight":
        o.priorWeight = parseFloat32(flag, value());
        break;
      case "--unmask-schedule":
        o.unmaskSchedule = value();
        break;
      case "--cf-embeddings":
        o.cfEmbeddings = choice(flag, value(), CF_EMBEDDINGS);
        break;
      case "--edit-tokens":
        o.editTokens = value();
        break;
      case "--edit-image":
        o.editImage = value();
        break;
      case "--strength":
        o.strength = parseFloat32(flag, value());
        break;
      case "--mask":
        o.mask = value();
        break;
      case "--help":
      case "-h":
        process.stdout.write(USAGE + "\n");
        process.exit(0);
      default:
        if (LOCAL_ONLY.has(flag)) throw new UsageError(`${flag} applies to local generation only; the server chooses the model.`);
        throw new UsageError(`unknown option '${args[i]}'.`);
    }
  }
  if (o.editTokens && o.editImage) throw new UsageError("--edit-tokens and --edit-image cannot be used together (one source).");
  if ((o.strength !== undefined || o.mask) && !o.editTokens && !o.editImage) {
    throw new UsageError("--strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE.");
  }
  if (!o.server) throw new UsageError("--server URL is required (e.g. http://127.0.0.1:50051).");
  if (o.prompts.length === 0) throw new UsageError("at least one --prompt is required.");
  if (!o.output) throw new UsageError("--output DIR is required.");
  return o;
}

async function readLatents(file: string, flag = "--latents"): Promise<number[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new UsageError(`${flag}: cannot read '${file}': ${(err as Error).message}`);
  }
  if (!Array.isArray(json) || !json.every((row) => Array.isArray(row))) {
    throw new UsageError(`${flag}: expected a JSON array of integer arrays, shape [images, H*W].`);
  }
  const flat: number[] = [];
  for (const row of json as unknown[][]) {
    for (const v of row) {
      if (typeof v !== "number" || !Number.isInteger(v) || Math.abs(v) > 2147483647) {
        throw new UsageError(`${flag}: every token must be an integer, got ${JSON.stringify(v)}.`);
      }
      flat.push(v);
    }
  }
  return flat;
}

/** --unmask-schedule FILE: a JSON array of integers, tokens per timestep (index = t). */
async function readSchedule(file: string): Promise<number[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new UsageError(`--unmask-schedule: cannot read '${file}': ${(err as Error).message}`);
  }
  if (!Array.isArray(json) || !json.every((v) => typeof v === "number" && Number.isInteger(v))) {
    throw new UsageError("--unmask-schedule: expected a JSON array of integers (one per timestep, index = t).");
  }
  return json as number[];
}

async function readBytes(flag: string, file: string): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new UsageError(`${flag}: cannot read '${file}': ${(err as Error).message}`);
  }
}

/** Command-line flag of a GenerateRequest field path, for error messages. */
const FLAG_OF: Record<string, string> = {
  prompts: "--prompt",
  num_inference_steps: "--steps",
  guidance_scale: "--guidance-scale",
  truncation_rate: "--truncation-rate",
  num_images_per_prompt: "--images-per-prompt",
  seed: "--seed",
  initial_latents: "--latents",
  image_format: "--format",
  image_quality: "--quality",
  "sampler.kind": "--sampler",
  "sampler.speed": "--speed",
  "sampler.prior": "--prior",
  "sampler.prior_weight": "--prior-weight",
  "sampler.unmask_schedule": "--unmask-schedule",
  "sampler.classifier_free_embeddings": "--cf-embeddings",
  "edit.source_tokens": "--edit-tokens",
  "edit.source_image": "--edit-image",
  "edit.strength": "--strength",
  "edit.mask": "--mask",
  "edit.mask_image": "--mask",
};

function flagOf(field: string): string | undefined {
  const path = field.replace(/\[\d+\]$/, "");
  return FLAG_OF[path] ?? FLAG_OF[path.split(".")[0]!];
}

function progressBar(done: number, total: number): string {
  const width = 30;
  const filled = total > 0 ? Math.round((done / total) * width) : 0;
  return `\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} steps`;
}

/** True while a progress line without its newline is on stderr. */
let lineOpen = false;

const EXTENSION: Record<string, string> = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };
const FORMAT = { png: ImageFormat.PNG, jpeg: ImageFormat.JPEG, webp: ImageFormat.WEBP } as const;

async function main(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const request: GenerateRequestInit = {
    prompts: o.prompts,
    numInferenceSteps: o.steps ?? 0,
    guidanceScale: o.guidanceScale,
    truncationRate: o.truncationRate,
    numImagesPerPrompt: o.imagesPerPrompt ?? 0,
    seed: o.seed,
    initialLatents: o.latents ? await readLatents(o.latents) : [],
    imageFormat: FORMAT[o.format],
    imageQuality: o.quality ?? 0,
  };
  if (o.sampler !== undefined || o.speed !== undefined || o.prior !== undefined || o.priorWeight !== undefined || o.unmaskSchedule || o.cfEmbeddings !== undefined) {
    request.sampler = {
      kind: o.sampler,
      speed: o.speed,
      prior: o.prior,
      priorWeight: o.priorWeight,
      unmaskSchedule: o.unmaskSchedule ? await readSchedule(o.unmaskSchedule) : [],
      classifierFreeEmbeddings: o.cfEmbeddings,
    };
  }
  if (o.editTokens || o.editImage) {
    request.edit = {
      sourceTokens: o.editTokens ? await readLatents(o.editTokens, "--edit-tokens") : [],
      sourceImage: o.editImage ? await readBytes("--edit-image", o.editImage) : undefined,
      strength: o.strength,
      maskImage: o.mask ? await readBytes("--mask", o.mask) : undefined,
    };
  }
  const client = new VqDiffusionClient(o.server!);
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  try {
    let seed: bigint | undefined;
    const started = Date.now();
    const images = await client.generateImages(request, {
      signal: abort.signal,
      onEvent: (ev) => {
        if (ev.type === "started") seed = ev.seed;
        if (o.quiet) return;
        if (ev.type === "queued") process.stderr.write(`\rqueued: position ${ev.position} of ${ev.queueLength}`);
        else if (ev.type === "progress") process.stderr.write(progressBar(ev.completedSteps, ev.totalSteps));
        else if (ev.type === "completed" && lineOpen) process.stderr.write("\n");
        lineOpen = ev.type === "queued" || ev.type === "progress" || (lineOpen && ev.type !== "completed");
      },
    });
    await mkdir(o.output!, { recursive: true });
    for (const image of images) {
      const ext = EXTENSION[image.mimeType] ?? o.format;
      await writeFile(join(o.output!, `${String(image.index).padStart(3, "0")}.${ext}`), image.data);
    }
    process.stderr.write(`seed: ${seed}; wrote ${images.length} image(s) to ${o.output} in ${((Date.now() - started) / 1000).toFixed(2)} s\n`);
    return 0;
  } finally {
    process.off("SIGINT", onSigint);
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof VqDiffusionError) {
      if (lineOpen) process.stderr.write("\n");
      if (err.codeName === "INVALID_ARGUMENT") {
        const v = err.fieldViolations[0];
        const flag = v ? flagOf(v.field) : undefined;
        const where = v ? `${flag ? `${flag} (${v.field})` : v.field}: ` : "";
        process.stderr.write(`error: ${where}${err.details}\n`);
        process.exit(2);
      }
      process.stderr.write(`error: ${err.codeName}: ${err.details}\n`);
      process.exit(1);
    }
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
