import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";

/** One entry of a `google.rpc.BadRequest`: the field path (`truncation_rate`, `prompts[1]`, ...) and why. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** gRPC status names by number (OK, CANCELLED, ..., UNAUTHENTICATED). */
export type StatusName = keyof typeof grpc.status;

const BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest";
const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** Name of a gRPC status code, e.g. 3 -> "INVALID_ARGUMENT". */
export function statusName(code: number): StatusName | "UNKNOWN" {
  const name = (grpc.status as unknown as Record<number, string | undefined>)[code];
  return (name ?? "UNKNOWN") as StatusName;
}

/**
 * An RPC failed. `code` is the gRPC status number (3), `codeName` its name ("INVALID_ARGUMENT"),
 * `details` the server's message, `fieldViolations` the `google.rpc.BadRequest` entries from the
 * `grpc-status-details-bin` trailer (empty when there are none).
 */
export class VqDiffusionError extends Error {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly details: string;
  readonly fieldViolations: readonly FieldViolation[];
  readonly metadata: grpc.Metadata | undefined;

  constructor(
    code: grpc.status,
    details: string,
    options: { fieldViolations?: readonly FieldViolation[]; metadata?: grpc.Metadata; cause?: unknown } = {},
  ) {
    super(`${statusName(code)}: ${details}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VqDiffusionError";
    this.code = code;
    this.codeName = statusName(code);
    this.details = details;
    this.fieldViolations = options.fieldViolations ?? [];
    this.metadata = options.metadata;
  }

  /** Wraps a grpc-js error (a `ServiceError`, or anything thrown around a call). */
  static from(err: unknown): VqDiffusionError {
    if (err instanceof VqDiffusionError) return err;
    const e = err as Partial<grpc.ServiceError> | undefined;
    if (e && typeof e === "object" && typeof e.code === "number") {
      const metadata = e.metadata instanceof grpc.Metadata ? e.metadata : undefined;
      return new VqDiffusionError(e.code, e.details ?? e.message ?? "", {
        fieldViolations: metadata ? parseFieldViolations(metadata) : [],
        metadata,
        cause: err,
      });
    }
    const message = err instanceof Error ? err.message : String(err);
    return new VqDiffusionError(grpc.status.UNKNOWN, message, { cause: err });
  }
}

/** Field violations of the `google.rpc.BadRequest` details in a `grpc-status-details-bin` trailer. */
export function parseFieldViolations(metadata: grpc.Metadata): FieldViolation[] {
  const out: FieldViolation[] = [];
  for (const value of metadata.get(STATUS_DETAILS_KEY)) {
    if (typeof value === "string") continue;
    let status;
    try {
      status = fromBinary(StatusSchema, value);
    } catch {
      continue;
    }
    for (const any of status.details) {
      if (any.typeUrl !== BAD_REQUEST_TYPE) continue;
      try {
        const bad = fromBinary(BadRequestSchema, any.value);
        for (const v of bad.fieldViolations) out.push({ field: v.field, description: v.description });
      } catch {
        // Malformed details: keep the status code and message.
      }
    }
  }
  return out;
}
