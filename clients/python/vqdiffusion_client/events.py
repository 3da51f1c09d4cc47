"""Typed events of the Generate stream and request options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, List, Optional, Tuple, Union

from ._generated.vqdiffusion.v1 import vqdiffusion_pb2 as pb

_FORMATS = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}
_FORMAT_NAMES = {
    pb.IMAGE_FORMAT_UNSPECIFIED: "png",
    pb.IMAGE_FORMAT_PNG: "png",
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_WEBP: "webp",
}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

ImageFormatLike = Union[str, int]

# Names of the sampler options, as on the command line (vqd generate --sampler/--prior/--cf-embeddings).
SAMPLERS = {"diffusers": pb.SAMPLER_KIND_DIFFUSERS, "vq-diffusion": pb.SAMPLER_KIND_VQ_DIFFUSION}
PRIORS = {"none": pb.UNMASK_PRIOR_NONE, "high-quality": pb.UNMASK_PRIOR_HIGH_QUALITY, "purity": pb.UNMASK_PRIOR_PURITY}
CF_EMBEDDINGS = {"learned": pb.CLASSIFIER_FREE_EMBEDDINGS_LEARNED, "empty-prompt": pb.CLASSIFIER_FREE_EMBEDDINGS_EMPTY_PROMPT}
_SAMPLER_NAMES = {pb.SAMPLER_KIND_UNSPECIFIED: "diffusers", pb.SAMPLER_KIND_DIFFUSERS: "diffusers", pb.SAMPLER_KIND_VQ_DIFFUSION: "vq-diffusion"}
_PRIOR_NAMES = {pb.UNMASK_PRIOR_UNSPECIFIED: "none", pb.UNMASK_PRIOR_NONE: "none", pb.UNMASK_PRIOR_HIGH_QUALITY: "high-quality", pb.UNMASK_PRIOR_PURITY: "purity"}


def enum_value(kind: str, table: dict, name: Optional[Union[str, int]]) -> int:
    """A sampler/prior/cf-embeddings name (or its enum value) -> the enum value."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if isinstance(name, str) and name.lower() in table:
        return table[name.lower()]
    raise ValueError(f"{kind} must be one of {', '.join(table)}, got {name!r}")


def image_format_value(fmt: Optional[ImageFormatLike]) -> int:
    """"png" | "jpeg" | "jpg" | "webp" (or an ImageFormat enum value) -> the ImageFormat enum value."""
    if fmt is None:
        return pb.IMAGE_FORMAT_UNSPECIFIED
    if isinstance(fmt, int) and not isinstance(fmt, bool):
        if fmt not in _FORMAT_NAMES:
            raise ValueError(f"unknown image format {fmt}")
        return fmt
    if isinstance(fmt, str) and fmt.lower() in _FORMATS:
        return _FORMATS[fmt.lower()]
    raise ValueError(f"image format must be png, jpeg or webp, got {fmt!r}")


def _duration(d: Any) -> timedelta:
    return timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


@dataclass(frozen=True)
class SnapshotOptions:
    """Which intermediate states to stream (GenerateRequest.snapshots)."""

    every_n_steps: int
    include_tokens: bool = False
    include_preview: bool = False
    preview_format: ImageFormatLike = "png"
    preview_quality: Optional[int] = None

    def to_proto(self) -> pb.SnapshotOptions:
        return pb.SnapshotOptions(
            every_n_steps=self.every_n_steps,
            include_tokens=self.include_tokens,
            include_preview=self.include_preview,
            preview_format=image_format_value(self.preview_format),
            preview_quality=self.preview_quality or 0,
        )


@dataclass(frozen=True)
class Queued:
    """The request waits in the queue (1 = next)."""

    position: int
    queue_length: int
    raw: pb.QueuedEvent = field(repr=False, compare=False)


@dataclass(frozen=True)
class Started:
    """Generation started, with the parameters actually used."""

    request_id: str
    prompts: Tuple[str, ...]
    num_inference_steps: int
    guidance_scale: float
    truncation_rate: float
    num_images_per_prompt: int
    seed: int
    timesteps: Tuple[int, ...]
    num_images: int
    image_format: str
    queue_wait: timedelta
    raw: pb.StartedEvent = field(repr=False, compare=False)
    # Progress events to expect (network calls); the vq-diffusion sampler's speed and prior set them.
    total_steps: int = 0
    sampler: str = "diffusers"
    speed: float = 1.0
    prior: str = "none"
    edit_strength: Optional[float] = None


@dataclass(frozen=True)
class Progress:
    """One denoising step finished."""

    completed_steps: int
    total_steps: int
    timestep: int
    elapsed: timedelta
    raw: pb.ProgressEvent = field(repr=False, compare=False)


@dataclass(frozen=True)
class Snapshot:
    """The state of one image after a step (see SnapshotOptions)."""

    completed_steps: int
    timestep: int
    image_index: int
    height: int
    width: int
    tokens: Tuple[int, ...]
    masked_count: int
    preview: bytes
    preview_mime_type: str
    raw: pb.SnapshotEvent = field(repr=False, compare=False)


@dataclass(frozen=True)
class Image:
    """A finished, encoded image; ``index`` is its place in the batch (prompt-major)."""

    index: int
    prompt_index: int
    data: bytes = field(repr=False)
    mime_type: str
    width: int
    height: int
    seed: int
    raw: pb.ImageEvent = field(repr=False, compare=False)

    @property
    def extension(self) -> str:
        """File extension for ``mime_type``: png, jpg or webp."""
        return _EXTENSIONS.get(self.mime_type, "bin")

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


@dataclass(frozen=True)
class Completed:
    """The request is done; the stream ends after this event."""

    queue_wait: timedelta
    generation_time: timedelta
    mean_step_time: timedelta
    decode_time: timedelta
    num_images: int
    raw: pb.CompletedEvent = field(repr=False, compare=False)
    # Progress and snapshot events the server left out because this client read more slowly than the model
    # produced them (each replaced by a later one of the same kind and image); 0 when it kept up.
    dropped_events: int = 0


Event = Union[Queued, Started, Progress, Snapshot, Image, Completed]


def event_from_proto(response: pb.GenerateResponse) -> Optional[Event]:
    """Converts one GenerateResponse to its typed event (None for an unknown/empty oneof)."""
    kind = response.WhichOneof("event")
    if kind == "queued":
        e = response.queued
        return Queued(e.position, e.queue_length, e)
    if kind == "started":
        e = response.started
        return Started(
            request_id=e.request_id,
            prompts=tuple(e.prompts),
            num_inference_steps=e.num_inference_steps,
            guidance_scale=e.guidance_scale,
            truncation_rate=e.truncation_rate,
            num_images_per_prompt=e.num_images_per_prompt,
            seed=e.seed,
            timesteps=tuple(e.timesteps),
            num_images=e.num_images,
            image_format=_FORMAT_NAMES.get(e.image_format, "png"),
            queue_wait=_duration(e.queue_wait),
            raw=e,
            total_steps=e.total_steps or e.num_inference_steps,
            sampler=_SAMPLER_NAMES.get(e.sampler, "diffusers"),
            speed=e.speed or 1.0,
            prior=_PRIOR_NAMES.get(e.prior, "none"),
            edit_strength=e.edit_strength if e.HasField("edit_strength") else None,
        )
    if kind == "progress":
        e = response.progress
        return Progress(e.completed_steps, e.total_steps, e.timestep, _duration(e.elapsed), e)
    if kind == "snapshot":
        e = response.snapshot
        return Snapshot(
            e.completed_steps, e.timestep, e.image_index, e.height, e.width, tuple(e.tokens),
            e.masked_count, e.preview, e.preview_mime_type, e,
        )
    if kind == "image":
        e = response.image
        return Image(e.index, e.prompt_index, e.data, e.mime_type, e.width, e.height, e.seed, e)
    if kind == "completed":
        e = response.completed
        return Completed(
            _duration(e.queue_wait), _duration(e.generation_time), _duration(e.mean_step_time),
            _duration(e.decode_time), e.num_images, e, dropped_events=e.dropped_events,
        )
    return None


def save_images(
    images: List[Image],
    output_dir: Union[str, "os.PathLike[str]"],
    *,
    digits: int = 3,
) -> List[str]:
    """Writes each image to ``output_dir/<index>.<ext>`` (000.png, 001.png, ... by image index),
    creating the folder; returns the paths in index order."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for image in sorted(images, key=lambda i: i.index):
        path = os.path.join(os.fspath(output_dir), f"{image.index:0{digits}d}.{image.extension}")
        image.save(path)
        paths.append(path)
    return paths
