export * from "./client.js";
export * from "./errors.js";
export {
  ImageFormat,
  GenerateRequestSchema,
  GenerateResponseSchema,
  GetModelInfoResponseSchema,
  VqDiffusionService,
  type GenerateRequest,
  type GenerateResponse,
  type GetModelInfoResponse,
  type ServerLimits,
  type SnapshotOptions,
} from "./gen/vqdiffusion/v1/vqdiffusion_pb.js";
