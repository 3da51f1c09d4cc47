import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { VqDiffusionError } from "./errors.js";
import {
  GenerateRequestSchema,
  GenerateResponseSchema,
  GetModelInfoRequestSchema,
  GetModelInfoResponseSchema,
  ImageFormat,
  SamplerKind,
  UnmaskPrior,
  type GenerateResponse,
  type GetModelInfoResponse,
} from "./gen/vqdiffusion/v1/vqdiffusion_pb.js";

const SERVICE = "/vqdiffusion.v1.VqDiffusionService/";
/** Default receive limit: 64 MB (the server sends up to 32 MB per message). */
export const DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = 64 * 1024 * 1024;

/**
 * A `GenerateRequest` as a plain object (camelCase field names of vqdiffusion.v1); unset fields take
 * the server's defaults. `seed` may be a bigint or a safe integer number. The sampler and edit options
 * are `sampler: { kind: SamplerKind.VQ_DIFFUSION, speed, prior, priorWeight, unmaskSchedule,
 * classifierFreeEmbeddings }` and `edit: { sourceTokens | sourceImage, strength, mask | maskImage }`.
 */
export type GenerateRequestInit = Omit<MessageInitShape<typeof GenerateRequestSchema>, "seed" | "$typeName"> & {
  seed?: bigint | number;
};

export interface VqDiffusionClientOptions {
  /**
   * API key, sent as `authorization: Bearer KEY` metadata on every call (over TLS or plaintext); printable ASCII
   * without spaces.
   */
  apiKey?: string;
  /** PEM root certificate(s) that an `https://` server's certificate must chain to; default: the system's roots. */
  rootCerts?: Buffer;
  /** Channel credentials; default: TLS for `https://` addresses (with `rootCerts`), plaintext otherwise. */
  credentials?: grpc.ChannelCredentials;
  /** Receive limit in bytes (default 64 MB). */
  maxReceiveMessageLength?: number;
  /** Extra grpc-js channel options (`grpc.keepalive_time_ms`, ...). */
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  /** Aborting cancels the call; the pending iteration / promise rejects with a CANCELLED `VqDiffusionError`. */
  signal?: AbortSignal;
  /** Absolute deadline (a Date or milliseconds since the epoch); DEADLINE_EXCEEDED after it. */
  deadline?: Date | number;
  /** Extra request metadata. */
  metadata?: grpc.Metadata;
}

export interface QueuedEvent {
  type: "queued";
  /** 1-based position in the queue (1 = next). */
  position: number;
  queueLength: number;
}

export interface StartedEvent {
  type: "started";
  requestId: string;
  prompts: string[];
  numInferenceSteps: number;
  guidanceScale: number;
  truncationRate: number;
  numImagesPerPrompt: number;
  seed: bigint;
  /** Timesteps in denoising order (n-1 ... 0). */
  timesteps: number[];
  numImages: number;
  imageFormat: ImageFormat;
  queueWaitMs: number;
  /** Progress events to expect (network calls); the vq-diffusion sampler's speed and prior set them. */
  totalSteps: number;
  sampler: SamplerKind;
  speed: number;
  /** The prior in effect (HIGH_QUALITY for a vq-diffusion speed below 1 without one). */
  prior: UnmaskPrior;
  /** The edit's strength, when the request noises a source. */
  editStrength: number | undefined;
}

export interface ProgressEvent {
  type: "progress";
  completedSteps: number;
  totalSteps: number;
  timestep: number;
  elapsedMs: number;
}

export interface SnapshotEvent {
  type: "snapshot";
  completedSteps: number;
  timestep: number;
  imageIndex: number;
  height: number;
  width: number;
  /** height x width row-major (only with `snapshots.includeTokens`). */
  tokens: number[];
  maskedCount: number;
  /** Encoded preview (only with `snapshots.includePreview`), else undefined. */
  preview: Uint8Array | undefined;
  previewMimeType: string;
}

export interface ImageEvent {
  type: "image";
  /** Prompt-major batch index: promptIndex * numImagesPerPrompt + k. */
  index: number;
  promptIndex: number;
  data: Uint8Array;
  mimeType: string;
  width: number;
  height: number;
  seed: bigint;
}

export interface CompletedEvent {
  type: "completed";
  queueWaitMs: number;
  generationTimeMs: number;
  meanStepTimeMs: number;
  decodeTimeMs: number;
  numImages: number;
  /**
   * Progress and snapshot events the server left out because this client read more slowly than the model produced
   * them (each replaced by a later one of the same kind and image); 0 when it kept up.
   */
  droppedEvents: number;
}

/** One event of a Generate stream: queued* -> started -> (progress, snapshot*)* -> image+ -> completed. */
export type GenerateEvent = QueuedEvent | StartedEvent | ProgressEvent | SnapshotEvent | ImageEvent | CompletedEvent;

export type GeneratedImage = Omit<ImageEvent, "type">;

export interface GenerateImagesOptions extends CallOptions {
  onProgress?: (event: ProgressEvent) => void;
  /** Called with every event (queued, started, progress, snapshot, image, completed). */
  onEvent?: (event: GenerateEvent) => void;
}

function durationMs(d: Duration | undefined): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

/** Converts one wire message to a `GenerateEvent`. */
export function toEvent(msg: GenerateResponse): GenerateEvent {
  const e = msg.event;
  switch (e.case) {
    case "queued":
      return { type: "queued", position: e.value.position, queueLength: e.value.queueLength };
    case "started": {
      const v = e.value;
      return {
        type: "started",
        requestId: v.requestId,
        prompts: [...v.prompts],
        numInferenceSteps: v.numInferenceSteps,
        guidanceScale: v.guidanceScale,
        truncationRate: v.truncationRate,
        numImagesPerPrompt: v.numImagesPerPrompt,
        seed: v.seed,
        timesteps: v.timesteps.map(Number),
        numImages: v.numImages,
        imageFormat: v.imageFormat,
        queueWaitMs: durationMs(v.queueWait),
        totalSteps: v.totalSteps || v.numInferenceSteps,
        sampler: v.sampler,
        speed: v.speed || 1,
        prior: v.prior,
        editStrength: v.editStrength,
      };
    }
    case "progress":
      return {
        type: "progress",
        completedSteps: e.value.completedSteps,
        totalSteps: e.value.totalSteps,
        timestep: Number(e.value.timestep),
        elapsedMs: durationMs(e.value.elapsed),
      };
    case "snapshot": {
      const v = e.value;
      return {
        type: "snapshot",
        completedSteps: v.completedSteps,
        timestep: Number(v.timestep),
        imageIndex: v.imageIndex,
        height: v.height,
        width: v.width,
        tokens: [...v.tokens],
        maskedCount: v.maskedCount,
        preview: v.preview.length > 0 ? v.preview : undefined,
        previewMimeType: v.previewMimeType,
      };
    }
    case "image": {
      const v = e.value;
      return {
        type: "image",
        index: v.index,
        promptIndex: v.promptIndex,
        data: v.data,
        mimeType: v.mimeType,
        width: v.width,
        height: v.height,
        seed: v.seed,
      };
    }
    case "completed": {
      const v = e.value;
      return {
        type: "completed",
        queueWaitMs: durationMs(v.queueWait),
        generationTimeMs: durationMs(v.generationTime),
        meanStepTimeMs: durationMs(v.meanStepTime),
        decodeTimeMs: durationMs(v.decodeTime),
        numImages: v.numImages,
        droppedEvents: v.droppedEvents,
      };
    }
    default:
      throw new VqDiffusionError(grpc.status.INTERNAL, "the server sent an empty GenerateResponse event");
  }
}

/** Splits "http://host:port", "https://host:port" or "host:port" into a grpc-js target and TLS flag. */
export function parseAddress(address: string): { target: string; tls: boolean } {
  const m = /^(https?):\/\/(.+?)\/*$/i.exec(address.trim());
  if (m) return { target: m[2]!, tls: m[1]!.toLowerCase() === "https" };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address)) throw new TypeError(`unsupported address scheme: ${address}`);
  return { target: address.trim(), tls: false };
}

/**
 * Client of `vqdiffusion.v1.VqDiffusionService` over @grpc/grpc-js.
 *
 *   const client = new VqDiffusionClient("http://127.0.0.1:50051");
 *   for await (const ev of client.generate({ prompts: ["a photo of a cat"], seed: 0n })) { ... }
 */
export class VqDiffusionClient {
  private readonly client: grpc.Client;
  private readonly authorization: string | undefined;

  constructor(address: string, options: VqDiffusionClientOptions = {}) {
    const { target, tls } = parseAddress(address);
    if (options.rootCerts !== undefined && !tls && options.credentials === undefined) {
      throw new TypeError("rootCerts need an https:// address");
    }
    this.authorization = options.apiKey === undefined ? undefined : "Bearer " + checkApiKey(options.apiKey);
    const credentials =
      options.credentials ?? (tls ? grpc.credentials.createSsl(options.rootCerts ?? null) : grpc.credentials.createInsecure());
    this.client = new grpc.Client(target, credentials, {
      "grpc.max_receive_message_length": options.maxReceiveMessageLength ?? DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH,
      ...options.channelOptions,
    });
  }

  /** The call's metadata: the caller's (copied) plus the API key's `authorization` entry. */
  private metadataFor(options: CallOptions): grpc.Metadata {
    const metadata = options.metadata?.clone() ?? new grpc.Metadata();
    if (this.authorization !== undefined) metadata.set("authorization", this.authorization);
    return metadata;
  }

  /** Closes the channel; calls in flight are not affected until they finish. */
  close(): void {
    this.client.close();
  }

  /**
   * Streams the events of one Generate call. Breaking out of the loop or aborting `signal` cancels
   * the call on the server; failures throw a `VqDiffusionError`.
   */
  async *generate(request: GenerateRequestInit, options: CallOptions = {}): AsyncGenerator<GenerateEvent, void, undefined> {
    const { signal } = options;
    const message = create(GenerateRequestSchema, {
      ...request,
      seed: request.seed === undefined ? undefined : toSeed(request.seed),
    } as MessageInitShape<typeof GenerateRequestSchema>);
    throwIfAborted(signal);
    const call = this.client.makeServerStreamRequest(
      SERVICE + "Generate",
      (m: typeof message) => Buffer.from(toBinary(GenerateRequestSchema, m)),
      (b: Buffer) => fromBinary(GenerateResponseSchema, b),
      message,
      this.metadataFor(options),
      options.deadline === undefined ? {} : { deadline: options.deadline },
    );
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      call.cancel();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let finished = false;
    try {
      for await (const msg of call as AsyncIterable<GenerateResponse>) {
        yield toEvent(msg);
      }
      finished = true;
    } catch (err) {
      finished = true;
      const e = VqDiffusionError.from(err);
      if (aborted && e.code === grpc.status.CANCELLED) {
        throw new VqDiffusionError(grpc.status.CANCELLED, "the call was cancelled by its AbortSignal", { cause: signal?.reason });
      }
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      // The consumer stopped early (break/return): cancel the server-side work.
      if (!finished) call.cancel();
    }
  }

  /** Runs one Generate call to the end and returns its images in batch (prompt-major) order. */
  async generateImages(request: GenerateRequestInit, options: GenerateImagesOptions = {}): Promise<GeneratedImage[]> {
    const images: GeneratedImage[] = [];
    for await (const ev of this.generate(request, options)) {
      options.onEvent?.(ev);
      if (ev.type === "progress") options.onProgress?.(ev);
      else if (ev.type === "image") {
        const { type: _type, ...image } = ev;
        images.push(image);
      }
    }
    return images.sort((a, b) => a.index - b.index);
  }

  /** Describes the served model, its defaults and limits. */
  getModelInfo(options: CallOptions = {}): Promise<GetModelInfoResponse> {
    const { signal } = options;
    return new Promise((resolve, reject) => {
      try {
        throwIfAborted(signal);
      } catch (err) {
        reject(err);
        return;
      }
      let aborted = false;
      const onAbort = () => {
        aborted = true;
        call.cancel();
      };
      const call = this.client.makeUnaryRequest(
        SERVICE + "GetModelInfo",
        (m: ReturnType<typeof create<typeof GetModelInfoRequestSchema>>) => Buffer.from(toBinary(GetModelInfoRequestSchema, m)),
        (b: Buffer) => fromBinary(GetModelInfoResponseSchema, b),
        create(GetModelInfoRequestSchema),
        this.metadataFor(options),
        options.deadline === undefined ? {} : { deadline: options.deadline },
        (err, value) => {
          signal?.removeEventListener("abort", onAbort);
          if (err) {
            const e = VqDiffusionError.from(err);
            reject(
              aborted && e.code === grpc.status.CANCELLED
                ? new VqDiffusionError(grpc.status.CANCELLED, "the call was cancelled by its AbortSignal", { cause: signal?.reason })
                : e,
            );
          } else resolve(value!);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** An API key as sent: not empty, printable ASCII without spaces (the CLI's rule); a TypeError never quotes it. */
export function checkApiKey(apiKey: string): string {
  if (typeof apiKey !== "string") throw new TypeError("apiKey must be a string");
  if (apiKey.length === 0) throw new TypeError("apiKey must not be empty");
  if (!/^[\x21-\x7e]+$/.test(apiKey)) throw new TypeError("apiKey must be printable ASCII without spaces");
  return apiKey;
}

function toSeed(seed: bigint | number): bigint {
  if (typeof seed === "bigint") return seed;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer or a bigint, got ${seed}`);
  return BigInt(seed);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new VqDiffusionError(grpc.status.CANCELLED, "the call was cancelled by its AbortSignal", { cause: signal.reason });
  }
}
