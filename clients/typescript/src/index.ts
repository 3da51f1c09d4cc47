export * from "./client.js";
export * from "./errors.js";
export {
  ImageFormat,
  SamplerKind,
  UnmaskPrior,
  ClassifierFreeEmbeddings,
  GenerateRequestSchema,
  GenerateResponseSchema,
  GetModelInfoResponseSchema,
  VqDiffusionService,
  type GenerateRequest,
  type GenerateResponse,
  type GetModelInfoResponse,
  type ServerLimits,
  type SnapshotOptions,
  type SamplerOptions,
  type EditOptions,
  type SamplerInfo,
  type SpeedInfo,
  type UnmaskScheduleInfo,
} from "./gen/vqdiffusion/v1/vqdiffusion_pb.js";
