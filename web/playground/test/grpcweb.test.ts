// gRPC-Web over HTTP/1.1 without the page or any gRPC library: node's fetch with application/grpc-web+proto framing
// (a 5-byte prefix per message: flag 0x00 data / 0x80 trailers, then the big-endian length).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BadRequestSchema } from "../../../clients/typescript/src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../../clients/typescript/src/gen/google/rpc/status_pb.js";
import {
  GenerateRequestSchema,
  GenerateResponseSchema,
  GetModelInfoRequestSchema,
  GetModelInfoResponseSchema,
  type GenerateResponse,
} from "../../../clients/typescript/src/gen/vqdiffusion/v1/vqdiffusion_pb.js";
import { VqDiffusionClient } from "../../../clients/typescript/src/index.js";
import { startWebServer, type WebTestServer } from "./server.js";

let server: WebTestServer;

before(async () => {
  server = await startWebServer();
});

after(async () => {
  await server?.stop();
});

function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

interface Frame {
  trailer: boolean;
  data: Uint8Array;
  at: number;
}

/** Reads the response body frame by frame as it arrives (time of arrival of each). */
async function readFrames(body: ReadableStream<Uint8Array>): Promise<Frame[]> {
  const frames: Frame[] = [];
  let buffer = new Uint8Array(0);
  for await (const chunk of body) {
    const merged = new Uint8Array(buffer.length + chunk.length);
    merged.set(buffer);
    merged.set(chunk, buffer.length);
    buffer = merged;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + length) break;
      frames.push({ trailer: (buffer[0] & 0x80) !== 0, data: buffer.slice(5, 5 + length), at: Date.now() });
      buffer = buffer.slice(5 + length);
    }
  }
  assert.equal(buffer.length, 0, "no bytes after the last frame");
  return frames;
}

function trailers(f: Frame): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of new TextDecoder().decode(f.data).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) map.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return map;
}

async function post(method: string, message: Uint8Array): Promise<Response> {
  return fetch(`${server.webAddress}/vqdiffusion.v1.VqDiffusionService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", accept: "application/grpc-web+proto" },
    body: frame(message),
  });
}

test("a gRPC-Web POST of GetModelInfo over HTTP/1.1 answers one message and grpc-status 0", async () => {
  const response = await post("GetModelInfo", toBinary(GetModelInfoRequestSchema, create(GetModelInfoRequestSchema)));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/grpc-web(\+proto)?$/);
  const frames = await readFrames(response.body!);
  assert.equal(frames.length, 2);
  assert.equal(frames[0].trailer, false);
  const info = fromBinary(GetModelInfoResponseSchema, frames[0].data);
  assert.equal(info.latentHeight, 8);
  assert.equal(info.imageWidth, 32);
  assert.equal(frames[1].trailer, true);
  assert.equal(trailers(frames[1]).get("grpc-status"), "0");
});

test("a server-streaming Generate over HTTP/1.1 streams every event as it happens, with the same image as gRPC", async () => {
  const init = { prompts: ["a red car"], numInferenceSteps: 30, seed: 11n, truncationRate: 0.86, snapshots: { everyNSteps: 10, includePreview: true } };
  const started = Date.now();
  const response = await post("Generate", toBinary(GenerateRequestSchema, create(GenerateRequestSchema, init)));
  assert.equal(response.status, 200);
  const frames = await readFrames(response.body!);
  const messages = frames.filter((f) => !f.trailer).map((f) => ({ at: f.at, msg: fromBinary(GenerateResponseSchema, f.data) as GenerateResponse }));
  const cases = messages.map((m) => m.msg.event.case);
  assert.equal(cases.filter((c) => c === "progress").length, 30);
  assert.equal(cases.filter((c) => c === "snapshot").length, 3);
  assert.deepEqual(cases.filter((c) => c !== "progress" && c !== "snapshot" && c !== "queued"), ["started", "image", "completed"]);
  assert.equal(trailers(frames[frames.length - 1]).get("grpc-status"), "0");

  // Streamed, not buffered: the first progress event arrived before the last one (30 steps take a while).
  const progressTimes = messages.filter((m) => m.msg.event.case === "progress").map((m) => m.at);
  assert.ok(progressTimes[0] < progressTimes[progressTimes.length - 1], `progress arrived at ${progressTimes.map((t) => t - started).join(", ")} ms`);

  const image = messages.find((m) => m.msg.event.case === "image")!.msg.event.value as { data: Uint8Array };
  const grpc = new VqDiffusionClient(server.grpcAddress);
  try {
    const [viaGrpc] = await grpc.generateImages(init);
    assert.deepEqual(Buffer.from(image.data), Buffer.from(viaGrpc.data));
  } finally {
    grpc.close();
  }
});

test("a bad value is INVALID_ARGUMENT in the headers (trailers-only) with the BadRequest details", async () => {
  const response = await post("Generate", toBinary(GenerateRequestSchema, create(GenerateRequestSchema, { prompts: ["x"], truncationRate: 2 })));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("grpc-status"), "3");
  assert.match(decodeURIComponent(response.headers.get("grpc-message") ?? ""), /truncation_rate/);
  const details = Buffer.from(response.headers.get("grpc-status-details-bin")!, "base64");
  const status = fromBinary(StatusSchema, details);
  assert.equal(status.code, 3);
  const bad = fromBinary(BadRequestSchema, status.details[0].value);
  assert.equal(bad.fieldViolations[0].field, "truncation_rate");
  assert.equal((await response.arrayBuffer()).byteLength, 0);
});
