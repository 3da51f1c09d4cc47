// The gRPC-Web client of the page: the generated vqdiffusion.v1 descriptors (clients/typescript/src/gen, the same
// code the TypeScript client uses) on Connect's gRPC-Web transport, same origin, with the API key when there is one.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema } from "../../../clients/typescript/src/gen/google/rpc/error_details_pb.js";
import { VqDiffusionService } from "../../../clients/typescript/src/gen/vqdiffusion/v1/vqdiffusion_pb.js";

export * from "../../../clients/typescript/src/gen/vqdiffusion/v1/vqdiffusion_pb.js";

const KEY_STORAGE = "vqd-api-key";

/** The API key of this tab (sessionStorage), or null. */
export function apiKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function setApiKey(key: string | null): void {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key is not kept.
  }
}

/** Sends `authorization: Bearer KEY` on every call once a key is set. */
const authorization: Interceptor = (next) => async (req) => {
  const key = apiKey();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

export type VqDiffusionClient = Client<typeof VqDiffusionService>;

export function connect(baseUrl: string = location.origin): VqDiffusionClient {
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [authorization] });
  return createClient(VqDiffusionService, transport);
}

/** One entry of the `google.rpc.BadRequest` details (grpc-status-details-bin). */
export interface FieldViolation {
  field: string;
  description: string;
}

export interface CallError {
  code: Code;
  codeName: string;
  message: string;
  violations: FieldViolation[];
}

export function callError(err: unknown): CallError {
  const e = ConnectError.from(err);
  const violations: FieldViolation[] = [];
  for (const bad of e.findDetails(BadRequestSchema)) {
    for (const v of bad.fieldViolations) violations.push({ field: v.field, description: v.description });
  }
  return { code: e.code, codeName: codeName(e.code), message: e.rawMessage, violations };
}

export function codeName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export { Code };
