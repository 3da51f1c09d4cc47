# syntax=docker/dockerfile:1
# VqDiffusion.Grpc GPU image: the server published with the CUDA TorchSharp backend
# (TorchSharp-cuda-linux, selected by -p:TorchSharpBackend=cuda) on an NVIDIA CUDA runtime base.
#
#   docker build -t vqdiffusion-grpc .
#   docker run --gpus all -p 50051:50051 -v /models/vq-diffusion-ithq:/models/ithq:ro vqdiffusion-grpc
#
# The model folder (a diffusers VQDiffusionPipeline, e.g. microsoft/vq-diffusion-ithq) is mounted at
# /models/ithq or named with VQD_Model__Path. A configured path that does not hold a model is an error
# (health stays NOT_SERVING and calls get UNAVAILABLE naming the missing file); to try the image without
# a model, run it with -e VQD_Model__Path= to serve the small test pipeline it ships with.

ARG DOTNET_VERSION=10.0
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.40

FROM mcr.microsoft.com/dotnet/sdk:${DOTNET_VERSION} AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/VqDiffusion.Server/VqDiffusion.Server.csproj -c Release -r linux-x64 --self-contained false \
      -p:TorchSharpBackend=cuda -o /app

FROM mcr.microsoft.com/dotnet/aspnet:${DOTNET_VERSION} AS dotnet

FROM ${CUDA_BASE} AS runtime
ARG GRPC_HEALTH_PROBE_VERSION
# ICU is required: the CLIP tokenizer normalises text (NFC) and must not run in invariant mode.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libicu74 libssl3 zlib1g wget \
 && wget -qO /usr/local/bin/grpc_health_probe \
      https://github.com/grpc-ecosystem/grpc-health-probe/releases/download/${GRPC_HEALTH_PROBE_VERSION}/grpc_health_probe-linux-amd64 \
 && chmod +x /usr/local/bin/grpc_health_probe \
 && apt-get purge -y wget && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY --from=dotnet /usr/share/dotnet /usr/share/dotnet
RUN ln -s /usr/share/dotnet/dotnet /usr/bin/dotnet
COPY --from=build /app /app

WORKDIR /app
ENV ASPNETCORE_URLS=http://0.0.0.0:50051 \
    VQD_Model__Path=/models/ithq \
    VQD_Model__Device=cuda \
    VQD_Model__DType=float16 \
    DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=false
EXPOSE 50051
# NOT_SERVING until the model is loaded (the 5.4 GB transformer takes a while): generous start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD grpc_health_probe -addr=127.0.0.1:50051 -service=vqdiffusion.v1.VqDiffusionService || exit 1
ENTRYPOINT ["dotnet", "VqDiffusion.Server.dll"]
