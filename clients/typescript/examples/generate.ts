// `vqd generate` against a running server:
//   npm run example -- --server http://127.0.0.1:50051 --prompt "a photo of a cat" --seed 0 --output out/
// Same flags as `vqd generate --server URL` (its local-model flags are rejected as vqd rejects them with
// --server); writes DIR/000.png, 001.png, ... in the server's batch order, vqd's progress bar on stderr.
// It rejects what vqd rejects, with vqd's line minus its "vqd: " prefix and vqd's exit code: 2 for bad
// input (here or INVALID_ARGUMENT from the server), 1 for other errors, 130 when interrupted. --api-key KEY (else
// $VQD_API_KEY) is sent as "authorization: Bearer KEY" on every call; --ca-cert FILE (else $VQD_CA_CERT) holds the
// PEM root certificate(s) to trust for an https:// server (else the system's roots).
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { X509Certificate } from "node:crypto";
import { statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
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
  "                [--format png|jpeg|webp] [--quality Q] [--api-key KEY] [--ca-cert FILE]\n" +
  "                [--quiet] --output DIR\n" +
  "defaults (the server's): --steps 100 --guidance-scale 5.0 --truncation-rate 1.0 --images-per-prompt 1;\n" +
  "seed random (printed); format png; quality 90 (jpeg/webp).\n" +
  "Writes DIR/000.png, DIR/001.png, ... in batch order (prompt 0's images, then prompt 1's, ...).";

/** Bad input found here: one line, exit code 2 (vqd's UsageException). */
class UsageError extends Error {}

/** A request field out of range, named as the server names it (vqd's GenerationArgumentException). */
class ArgumentError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(reason);
  }
}

type Format = "png" | "jpeg" | "webp";

interface Options {
  model?: string;
  server?: string;
  prompts: string[];
  steps?: number;
  guidanceScale?: number;
  truncationRate?: number;
  imagesPerPrompt: number;
  seed?: bigint;
  latents?: string;
  format: Format;
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
  apiKey?: string;
  caCert?: string;
}

const isEdit = (o: Options) => o.editTokens !== undefined || o.editImage !== undefined || o.strength !== undefined || o.mask !== undefined;

const SAMPLERS: Record<string, SamplerKind> = { diffusers: SamplerKind.DIFFUSERS, "vq-diffusion": SamplerKind.VQ_DIFFUSION };
const PRIORS: Record<string, UnmaskPrior> = { none: UnmaskPrior.NONE, "high-quality": UnmaskPrior.HIGH_QUALITY, purity: UnmaskPrior.PURITY };
const CF_EMBEDDINGS: Record<string, ClassifierFreeEmbeddings> = {
  learned: ClassifierFreeEmbeddings.LEARNED,
  "empty-prompt": ClassifierFreeEmbeddings.EMPTY_PROMPT,
};
const LOCAL_ONLY = new Set(["--device", "--dtype", "--variant"]);
const EXTENSION: Record<Format, string> = { png: "png", jpeg: "jpg", webp: "webp" };
const FORMAT = { png: ImageFormat.PNG, jpeg: ImageFormat.JPEG, webp: ImageFormat.WEBP } as const;

const INT32_MIN = -2147483648n;
const INT32_MAX = 2147483647n;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;
/** System.Text.Json's default depth limit, as vqd reads its files. */
const JSON_MAX_DEPTH = 64;

/** vqd's SamplerNames.TryParse*: trimmed, case-insensitive. */
function choice<T>(flag: string, value: string, table: Record<string, T>): T {
  const key = value.trim().toUpperCase();
  const name = Object.keys(table).find((n) => n.toUpperCase() === key);
  if (name === undefined) {
    const names = Object.keys(table);
    throw new UsageError(`${flag} must be ${names.slice(0, -1).join(", ")} or ${names.at(-1)}, got '${value}'.`);
  }
  return table[name]!;
}

/** int.TryParse(value, NumberStyles.AllowLeadingSign, InvariantCulture): ASCII digits, a sign, int32. */
function parseInt32(flag: string, v: string): number {
  if (!/^[+-]?[0-9]+$/.test(v) || BigInt(v) < INT32_MIN || BigInt(v) > INT32_MAX) {
    throw new UsageError(`${flag} must be an integer, got '${v}'.`);
  }
  return Number(v);
}

/** double.TryParse(value, NumberStyles.Float, InvariantCulture): white space, sign, point, exponent, Infinity, NaN. */
function parseDouble(flag: string, v: string): number {
  const text = v.replace(/^[\t\n\v\f\r ]+|[\t\n\v\f\r ]+$/g, "");
  if (/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(text)) return Number(text);
  const special = text.toUpperCase();
  if (special === "INFINITY" || special === "+INFINITY") return Infinity;
  if (special === "-INFINITY") return -Infinity;
  if (special === "NAN" || special === "+NAN" || special === "-NAN") return NaN;
  throw new UsageError(`${flag} must be a number, got '${v}'.`);
}

/** float.TryParse: the same syntax, rounded to float32 (out of range = infinity), as the proto field holds it. */
function parseFloat32(flag: string, v: string): number {
  return Math.fround(parseDouble(flag, v));
}

/** vqd's ApiKeyProblem for --api-key or $VQD_API_KEY (`source`): not empty, printable ASCII without spaces; never echoed. */
function checkApiKey(key: string, source = "--api-key"): string {
  if (key.length === 0) throw new UsageError(`${source} must not be empty.`);
  if (!/^[\x21-\x7e]+$/.test(key)) throw new UsageError(`${source} must be printable ASCII without spaces.`);
  return key;
}

/** vqd's GenerateOptions.Parse, flag for flag and check for check, in the same order. */
export function parseArgs(args: string[]): Options {
  const o: Options = { prompts: [], format: "png", quiet: false, imagesPerPrompt: 1 };
  let localOnly: string | undefined;
  let remoteOnly: string | undefined;
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
      case "--model":
        o.model = value();
        break;
      case "--server":
        o.server = value();
        break;
      case "--prompt":
        o.prompts.push(value());
        break;
      case "--steps":
        o.steps = parseInt32(flag, value());
        break;
      case "--guidance-scale":
        o.guidanceScale = parseFloat32(flag, value());
        break;
      case "--truncation-rate":
        o.truncationRate = parseFloat32(flag, value());
        break;
      case "--images-per-prompt":
        o.imagesPerPrompt = parseInt32(flag, value());
        break;
      case "--seed": {
        const s = value();
        if (!/^[0-9]+$/.test(s) || BigInt(s) > U64_MAX) {
          throw new UsageError(`--seed must be an integer between 0 and ${U64_MAX}, got '${s}'.`);
        }
        o.seed = BigInt(s);
        break;
      }
      case "--latents":
        o.latents = value();
        break;
      case "--sampler":
        o.sampler = choice(flag, value(), SAMPLERS);
        break;
      case "--speed":
        o.speed = parseDouble(flag, value());
        break;
      case "--prior":
        o.prior = choice(flag, value(), PRIORS);
        break;
      case "--prior-weight":
        o.priorWeight = parseDouble(flag, value());
        break;
      case "--cf-embeddings":
        o.cfEmbeddings = choice(flag, value(), CF_EMBEDDINGS);
        break;
      case "--unmask-schedule":
        o.unmaskSchedule = value();
        break;
      case "--edit-tokens":
        o.editTokens = value();
        break;
      case "--edit-image":
        o.editImage = value();
        break;
      case "--strength":
        o.strength = parseDouble(flag, value());
        break;
      case "--mask":
        o.mask = value();
        break;
      case "--format": {
        const f = value();
        const name = f.trim().toLowerCase();
        if (name === "png" || name === "webp") o.format = name;
        else if (name === "jpeg" || name === "jpg") o.format = "jpeg";
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
      case "--api-key":
        o.apiKey = checkApiKey(value());
        remoteOnly ??= flag;
        break;
      case "--ca-cert":
        o.caCert = value();
        if (o.caCert === "") throw new UsageError("--ca-cert must not be empty.");
        remoteOnly ??= flag;
        break;
      case "--quiet":
        o.quiet = true;
        break;
      default:
        if (LOCAL_ONLY.has(flag)) {
          value();
          localOnly ??= flag;
          break;
        }
        throw new UsageError(`unknown option '${args[i]}'.`);
    }
  }
  if (o.server === undefined && remoteOnly !== undefined) throw new UsageError(`${remoteOnly} needs --server (it is for reaching a running server).`);
  if (o.server !== undefined) {
    if (o.model !== undefined) throw new UsageError("--model and --server cannot be used together (--model runs locally, --server asks a server).");
    if (localOnly !== undefined) throw new UsageError(`${localOnly} cannot be used with --server (the server chooses its device, dtype and weights).`);
  }
  if (o.editTokens !== undefined && o.editImage !== undefined) throw new UsageError("--edit-tokens and --edit-image cannot be used together (one source).");
  if (isEdit(o) && o.editTokens === undefined && o.editImage === undefined) {
    throw new UsageError("--strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE.");
  }
  if (o.prompts.length === 0) throw new UsageError("at least one --prompt is required.");
  if (!o.output) throw new UsageError("--output DIR is required.");
  // Where vqd would run the model in-process (this example has no local mode).
  if (o.server === undefined) throw new UsageError("--server URL is required (http://host:port); this example has no local mode.");
  return o;
}

/** vqd's check: an absolute http:// or https:// URL; returns scheme://host:port for the client. */
function serverAddress(url: string): string {
  let parsed: URL | undefined;
  try {
    parsed = /^https?:\/\//i.test(url) ? new URL(url) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:") || !parsed.hostname) {
    throw new UsageError(`--server must be an http:// or https:// URL (http://host:port), got '${url}'.`);
  }
  const port = parsed.port || (parsed.protocol === "https:" ? "443" : "80");
  return `${parsed.protocol}//${parsed.hostname}:${port}`;
}

const PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----";
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** vqd's CaCertFile.Read: a readable file with at least one PEM certificate, each of which decodes. */
async function readCaCert(file: string, source: string): Promise<Buffer> {
  const data = Buffer.from(await readBytes(source, file));
  if (!data.includes(PEM_CERTIFICATE)) throw new UsageError(`${source} ${file}: no PEM certificate (-----BEGIN CERTIFICATE-----).`);
  for (const block of data.toString("latin1").match(PEM_BLOCK) ?? []) {
    try {
      new X509Certificate(block);
    } catch {
      throw new UsageError(`${source} ${file}: not a valid PEM certificate.`);
    }
  }
  return data;
}

/**
 * vqd's checks of the connection flags, in its order: the --server URL; $VQD_API_KEY when --api-key is absent
 * (empty = unset); the CA (--ca-cert, else $VQD_CA_CERT) for https:// only; then its file.
 */
async function connection(o: Options): Promise<{ address: string; apiKey?: string; rootCerts?: Buffer }> {
  const address = serverAddress(o.server!);
  let apiKey = o.apiKey;
  if (apiKey === undefined && process.env.VQD_API_KEY) apiKey = checkApiKey(process.env.VQD_API_KEY, "VQD_API_KEY");
  const caCert = o.caCert ?? (process.env.VQD_CA_CERT || undefined);
  const source = o.caCert !== undefined ? "--ca-cert" : "VQD_CA_CERT";
  if (caCert !== undefined && !address.startsWith("https:")) throw new UsageError(`${source} needs an https:// --server.`);
  const rootCerts = caCert === undefined ? undefined : await readCaCert(caCert, source);
  return { address, apiKey, rootCerts };
}

/** The flag of a request field path (prompts[1] -> --prompt[1]), as vqd names it. */
const FLAG_OF: Record<string, string> = {
  image_format: "--format",
  image_quality: "--quality",
  num_inference_steps: "--steps",
  guidance_scale: "--guidance-scale",
  truncation_rate: "--truncation-rate",
  num_images_per_prompt: "--images-per-prompt",
  initial_latents: "--latents",
  seed: "--seed",
  "sampler.kind": "--sampler",
  "sampler.speed": "--speed",
  "sampler.prior": "--prior",
  "sampler.prior_weight": "--prior-weight",
  "sampler.classifier_free_embeddings": "--cf-embeddings",
  "edit.source_image": "--edit-image",
  "edit.strength": "--strength",
  "edit.mask": "--mask",
  "edit.mask_image": "--mask",
};
const FLAG_PREFIXES: [string, string][] = [
  ["sampler.unmask_schedule", "--unmask-schedule"],
  ["edit.source_tokens", "--edit-tokens"],
  ["prompts", "--prompt"],
];

function toFlag(field: string): string {
  if (Object.hasOwn(FLAG_OF, field)) return FLAG_OF[field]!;
  for (const [prefix, flag] of FLAG_PREFIXES) {
    if (field.startsWith(prefix)) return flag + field.slice(prefix.length);
  }
  return field;
}

const oneLine = (text: string) => text.replace(/\r\n|[\n\r\f\u0085\u2028\u2029]/g, " ");

/** The message .NET's File.ReadAllBytes gives for this failure (vqd prints it). */
function dotnetIoMessage(path: string, err: NodeJS.ErrnoException): string {
  const full = resolve(path);
  switch (err.code) {
    case "ENOENT":
    case "ENOTDIR": {
      let parentIsDir = false;
      try {
        parentIsDir = err.code === "ENOENT" && statSync(dirname(full)).isDirectory();
      } catch {
        parentIsDir = false;
      }
      return parentIsDir ? `Could not find file '${full}'.` : `Could not find a part of the path '${full}'.`;
    }
    case "EACCES":
    case "EPERM":
    case "EBADF":
    case "EISDIR":
      return `Access to the path '${full}' is denied.`;
    case "ENAMETOOLONG":
      return `The path '${full}' is too long, or a component of the specified path is too long.`;
    default: {
      // libuv's "ENOTDIR: not a directory, open '...'" -> strerror's "Not a directory".
      const m = /^[A-Z0-9]+: ([^,]+)/.exec(err.message);
      const text = m ? m[1]! : err.message;
      return `${text.charAt(0).toUpperCase()}${text.slice(1)} : '${full}'`;
    }
  }
}

async function readBytes(flag: string, file: string): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new UsageError(`${flag} ${file}: ${dotnetIoMessage(file, err as NodeJS.ErrnoException)}`);
  }
}

/** A JSON number with its text, so that 1.0, 1e2 and 2^63 stay distinguishable from integers. */
class JsonNumber {
  constructor(readonly text: string) {}
}
type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | { [key: string]: JsonValue };

/** Strict JSON (RFC 8259, no comments or trailing commas, at most 64 levels), as System.Text.Json reads it. */
function parseJson(text: string): JsonValue {
  let i = 0;
  const fail = (): never => {
    throw new SyntaxError("not valid JSON");
  };
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const token = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) return undefined;
    i += m[0].length;
    return m[0];
  };
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const value = (depth: number): JsonValue => {
    ws();
    const c = text[i];
    if (c === "[" || c === "{") {
      if (depth >= JSON_MAX_DEPTH) fail();
      i++;
      const close = c === "[" ? "]" : "}";
      const items: JsonValue[] = [];
      const fields: { [key: string]: JsonValue } = {};
      ws();
      if (text[i] === close) {
        i++;
        return c === "[" ? items : fields;
      }
      for (;;) {
        if (c === "[") items.push(value(depth + 1));
        else {
          ws();
          const key = token(STRING) ?? fail();
          ws();
          if (text[i++] !== ":") fail();
          fields[JSON.parse(key) as string] = value(depth + 1);
        }
        ws();
        const sep = text[i++];
        if (sep === close) return c === "[" ? items : fields;
        if (sep !== ",") fail();
      }
    }
    if (c === '"') return JSON.parse(token(STRING) ?? fail()) as string;
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    return new JsonNumber(token(NUMBER) ?? fail());
  };
  const result = value(0);
  ws();
  if (i !== text.length) fail();
  return result;
}

async function readJson(flag: string, file: string): Promise<JsonValue> {
  const bytes = await readBytes(flag, file);
  try {
    // Invalid UTF-8 is an error outside strings (no token) and kept inside them, as JsonDocument.Parse treats it.
    return parseJson(new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(bytes));
  } catch {
    throw new UsageError(`${flag} ${file}: not valid JSON.`);
  }
}

/** The value of an integer JSON number within [low, high], else undefined (JsonElement.TryGetInt64/Int32). */
function integer(v: JsonValue, low: bigint, high: bigint): bigint | undefined {
  if (!(v instanceof JsonNumber) || !/^-?[0-9]+$/.test(v.text)) return undefined;
  const n = BigInt(v.text);
  return n < low || n > high ? undefined : n;
}

/** vqd's LatentsFile.Read: [images][H*W] integers, flattened, clamped to int32 (the server names values out of range). */
async function readLatents(file: string, images: number, pixels: number, flag = "--latents"): Promise<number[]> {
  const doc = await readJson(flag, file);
  if (!Array.isArray(doc)) throw new UsageError(`${flag} ${file}: expected a JSON array of ${images} integer arrays.`);
  if (doc.length !== images) throw new UsageError(`${flag} ${file}: has ${doc.length} rows, expected ${images} (prompts × images per prompt).`);
  const flat: number[] = [];
  doc.forEach((row, r) => {
    if (!Array.isArray(row) || row.length !== pixels) throw new UsageError(`${flag} ${file}: row ${r} must be an array of ${pixels} integers (H·W).`);
    row.forEach((v, c) => {
      const n = integer(v, INT64_MIN, INT64_MAX);
      if (n === undefined) throw new UsageError(`${flag} ${file}: row ${r}, column ${c} is not an integer.`);
      flat.push(Number(n < INT32_MIN ? INT32_MIN : n > INT32_MAX ? INT32_MAX : n));
    });
  });
  return flat;
}

/** vqd's ScheduleFile.Read: a JSON array of int32 counts, tokens per timestep (index = t). */
async function readSchedule(file: string): Promise<number[]> {
  const flag = "--unmask-schedule";
  const doc = await readJson(flag, file);
  if (!Array.isArray(doc)) throw new UsageError(`${flag} ${file}: expected a JSON array of integers (one per timestep, index = t).`);
  return doc.map((v, n) => {
    const count = integer(v, INT32_MIN, INT32_MAX);
    if (count === undefined) throw new UsageError(`${flag} ${file}: entry ${n} is not an integer.`);
    return Number(count);
  });
}

/** vqd's progress bar on stderr: [#####.....] 37/100 t=63 4.2 it/s */
class ProgressBar {
  private static readonly WIDTH = 30;
  private readonly interactive = process.stderr.isTTY === true;
  private readonly start = performance.now();

  report(completed: number, total: number, timestep: number): void {
    const last = completed === total;
    if (!this.interactive && !last && completed % Math.max(1, Math.floor(total / 10)) !== 0) return;
    const width = ProgressBar.WIDTH;
    const filled = total === 0 ? width : Math.floor((completed * width) / total);
    const rate = completed / Math.max((performance.now() - this.start) / 1000, 1e-9);
    const line = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${completed}/${total} t=${timestep} ${rate.toFixed(1)} it/s`;
    process.stderr.write(this.interactive ? "\r" + line : line + "\n");
    if (last && this.interactive) process.stderr.write("\n");
  }
}

/** vqd's GenerateRemoteAsync: the same checks in the same order, then the stream. */
async function generate(o: Options, client: VqDiffusionClient, signal: AbortSignal): Promise<void> {
  let info: Awaited<ReturnType<VqDiffusionClient["getModelInfo"]>> | undefined;
  const modelInfo = async () => (info ??= await client.getModelInfo({ signal }));
  // In the protocol 0 means "the server's default"; on the command line it is out of range, as in vqd.
  if (o.steps === 0) {
    info = await client.getModelInfo({ signal });
    throw new ArgumentError("num_inference_steps", `num_inference_steps must be between 1 and ${info.numTrainTimesteps}, got 0.`);
  }
  if (o.imagesPerPrompt === 0) {
    info = await client.getModelInfo({ signal });
    throw new ArgumentError("num_images_per_prompt", `num_images_per_prompt must be between 1 and ${info.limits?.maxImagesPerPrompt ?? 0}, got 0.`);
  }

  const images = o.prompts.length * Math.max(o.imagesPerPrompt, 1);
  const request: GenerateRequestInit = {
    prompts: o.prompts,
    numInferenceSteps: o.steps ?? 0,
    guidanceScale: o.guidanceScale,
    truncationRate: o.truncationRate,
    numImagesPerPrompt: o.imagesPerPrompt,
    seed: o.seed,
    imageFormat: FORMAT[o.format],
    imageQuality: o.quality ?? 0,
  };
  if (o.sampler !== undefined || o.speed !== undefined || o.prior !== undefined || o.priorWeight !== undefined || o.cfEmbeddings !== undefined || o.unmaskSchedule !== undefined) {
    request.sampler = {
      kind: o.sampler ?? SamplerKind.DIFFUSERS,
      speed: o.speed,
      prior: o.prior,
      priorWeight: o.priorWeight,
      unmaskSchedule: o.unmaskSchedule !== undefined ? await readSchedule(o.unmaskSchedule) : [],
      classifierFreeEmbeddings: o.cfEmbeddings,
    };
  }
  if (isEdit(o)) {
    const edit: NonNullable<GenerateRequestInit["edit"]> = { strength: o.strength };
    if (o.editTokens !== undefined) {
      const m = await modelInfo();
      edit.sourceTokens = await readLatents(o.editTokens, images, m.latentHeight * m.latentWidth, "--edit-tokens");
    }
    if (o.editImage !== undefined) edit.sourceImage = await readBytes("--edit-image", o.editImage);
    if (o.mask !== undefined) edit.maskImage = await readBytes("--mask", o.mask);
    request.edit = edit;
  }
  if (o.latents !== undefined) {
    const m = await modelInfo();
    request.initialLatents = await readLatents(o.latents, images, m.latentHeight * m.latentWidth);
  }

  const bar = o.quiet ? undefined : new ProgressBar();
  let seed: bigint | undefined;
  let written = 0;
  for await (const ev of client.generate(request, { signal })) {
    if (ev.type === "started") {
      seed = ev.seed;
      await mkdir(o.output!, { recursive: true });
    } else if (ev.type === "progress") {
      bar?.report(ev.completedSteps, ev.totalSteps, ev.timestep);
    } else if (ev.type === "image") {
      await writeFile(join(o.output!, `${String(ev.index).padStart(3, "0")}.${EXTENSION[o.format]}`), ev.data);
      written++;
    }
  }
  if (!o.quiet) process.stderr.write(`seed: ${seed}; wrote ${written} image(s) to ${o.output}\n`);
}

/** "RESOURCE_EXHAUSTED" -> "ResourceExhausted" (Grpc.Core's StatusCode names, as vqd prints them). */
const statusName = (codeName: string) =>
  codeName
    .split("_")
    .map((p) => p.charAt(0) + p.slice(1).toLowerCase())
    .join("");

async function main(argv: string[]): Promise<number> {
  if (argv.some((a) => a === "-h" || a === "--help")) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  let o: Options | undefined;
  let client: VqDiffusionClient | undefined;
  const fail = (line: string, code: number) => {
    process.stderr.write(line + "\n");
    return code;
  };
  try {
    o = parseArgs(argv);
    const { address, apiKey, rootCerts } = await connection(o);
    client = new VqDiffusionClient(address, { apiKey, rootCerts });
    await generate(o, client, abort.signal);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) return fail(`error: ${err.message}`, 2);
    if (err instanceof ArgumentError) return fail(`error: ${toFlag(err.field)}: ${err.reason}`, 2);
    if (abort.signal.aborted) return fail("cancelled.", 130);
    if (err instanceof VqDiffusionError) {
      if (err.codeName === "INVALID_ARGUMENT") {
        const v = err.fieldViolations[0];
        return fail(v ? `error: ${toFlag(v.field)}: ${v.description}` : `error: ${oneLine(err.details)}`, 2);
      }
      return fail(`error: server ${o?.server}: ${statusName(err.codeName)}${err.details ? `: ${oneLine(err.details)}` : ""}`, 1);
    }
    return fail(`error: ${err instanceof Error ? err.message : String(err)}`, 1);
  } finally {
    process.off("SIGINT", onSigint);
    client?.close();
  }
}

// grpc-js passes an IP address of an https:// --server as the TLS server name, for which Node prints a deprecation
// warning (DEP0123) on stderr, next to the one error line; the connection itself is unaffected.
process.noDeprecation = true;
main(process.argv.slice(2)).then((code) => process.exit(code));
