"""The VqDiffusionService client."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Union
from urllib.parse import urlsplit

import grpc

from ._generated.vqdiffusion.v1 import vqdiffusion_pb2 as pb
from ._generated.vqdiffusion.v1 import vqdiffusion_pb2_grpc as pb_grpc
from .errors import VqDiffusionError, from_rpc_error
from .events import (
    CF_EMBEDDINGS,
    PRIORS,
    SAMPLERS,
    Completed,
    Event,
    Image,
    ImageFormatLike,
    Progress,
    SnapshotOptions,
    enum_value,
    event_from_proto,
    image_format_value,
)

DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = 64 * 1024 * 1024


def parse_target(target: str) -> "tuple[str, bool]":
    """``http://host:port`` / ``https://host:port`` / ``host:port`` -> (grpc target, use TLS)."""
    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"server address must be http://host:port, https://host:port or host:port, got {target!r}")
        if not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"server address must be http://host:port, https://host:port or host:port, got {target!r}")
        netloc = parts.netloc
        if parts.port is None:
            netloc += ":443" if parts.scheme == "https" else ":80"
        return netloc, parts.scheme == "https"
    if not target:
        raise ValueError("server address is empty")
    return target, False


def check_api_key(api_key: str) -> str:
    """The key as sent (``authorization: Bearer KEY``): not empty, printable ASCII without spaces (the CLI's rule);
    a ValueError otherwise (which never quotes the key)."""
    if not isinstance(api_key, str):
        raise TypeError("api_key must be a str")
    if not api_key:
        raise ValueError("api_key must not be empty")
    if any(not "\x21" <= c <= "\x7e" for c in api_key):
        raise ValueError("api_key must be printable ASCII without spaces")
    return api_key


def _flatten(values: Iterable[Any]) -> List[int]:
    flat: List[int] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            flat.extend(_flatten(v))
        else:
            flat.append(int(v))
    return flat


class GenerateStream(Iterator[Event]):
    """The events of one Generate call, in server order. Iterate it; ``cancel()`` (from any
    thread) stops the call and ends the iteration quietly. Use as a context manager to cancel
    the call when leaving the block early. Server errors raise a VqDiffusionError."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = threading.Event()
        self._done = False

    def __iter__(self) -> "GenerateStream":
        return self

    def __next__(self) -> Event:
        while True:
            if self._done:
                raise StopIteration
            try:
                response = next(self._call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as e:
                self._done = True
                if self._cancelled.is_set() and e.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                raise from_rpc_error(e) from None
            event = event_from_proto(response)
            if event is not None:
                return event

    def cancel(self) -> None:
        """Cancels the call; the server stops at the next step boundary."""
        self._cancelled.set()
        self._call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> "GenerateStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._done:
            self.cancel()


class Client:
    """A connection to a VqDiffusion.Grpc server.

    ``target`` is ``http://host:port`` (plaintext HTTP/2), ``https://host:port`` (TLS) or
    ``host:port`` (plaintext). ``api_key`` is sent as ``authorization: Bearer KEY`` metadata on every
    call (over TLS or plaintext); ``root_certificates`` (PEM bytes) are the roots that an https://
    server's certificate must chain to (None: the system's roots). ``credentials`` replaces the
    channel credentials altogether. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        target: str = "http://127.0.0.1:50051",
        *,
        api_key: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        max_receive_message_length: int = DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Sequence["tuple[str, Any]"] = (),
    ) -> None:
        address, tls = parse_target(target)
        if root_certificates is not None and not tls and credentials is None:
            raise ValueError("root_certificates need an https:// target")
        if isinstance(root_certificates, str):
            root_certificates = root_certificates.encode("ascii")
        self._metadata: Optional["tuple[tuple[str, str], ...]"] = (
            None if api_key is None else (("authorization", "Bearer " + check_api_key(api_key)),)
        )
        channel_options = [("grpc.max_receive_message_length", max_receive_message_length), *options]
        if tls or credentials is not None:
            self._channel = grpc.secure_channel(
                address, credentials or grpc.ssl_channel_credentials(root_certificates), channel_options)
        else:
            self._channel = grpc.insecure_channel(address, channel_options)
        self._stub = pb_grpc.VqDiffusionServiceStub(self._channel)
        self.target = target

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def model_info(self, *, timeout: Optional[float] = None) -> pb.GetModelInfoResponse:
        """The served model, its defaults and limits (the GetModelInfoResponse message)."""
        try:
            return self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    @staticmethod
    def build_request(
        prompts: Union[str, Sequence[str]],
        *,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        truncation_rate: Optional[float] = None,
        num_images_per_prompt: Optional[int] = None,
        seed: Optional[int] = None,
        initial_latents: Optional[Iterable[Any]] = None,
        image_format: Optional[ImageFormatLike] = "png",
        image_quality: Optional[int] = None,
        snapshots: Optional[Union[SnapshotOptions, pb.SnapshotOptions]] = None,
        request_id: Optional[str] = None,
        sampler: Optional[Union[str, int]] = None,
        speed: Optional[float] = None,
        prior: Optional[Union[str, int]] = None,
        prior_weight: Optional[float] = None,
        unmask_schedule: Optional[Sequence[int]] = None,
        cf_embeddings: Optional[Union[str, int]] = None,
        edit_tokens: Optional[Iterable[Any]] = None,
        edit_image: Optional[bytes] = None,
        strength: Optional[float] = None,
        mask: Optional[Sequence[bool]] = None,
        mask_image: Optional[bytes] = None,
    ) -> pb.GenerateRequest:
        """The GenerateRequest for these arguments; None leaves a field to the server default.

        Sampler options (``vqd generate`` flags): ``sampler`` "diffusers" | "vq-diffusion", ``speed`` (the
        original's infer_speed: >= 2 fast, < 1 high-quality), ``prior`` "none" | "high-quality" | "purity",
        ``prior_weight``, ``unmask_schedule`` (tokens per timestep, index = t), ``cf_embeddings``
        "learned" | "empty-prompt". Editing: ``edit_tokens`` ([images][H*W], flat or nested) or ``edit_image``
        (encoded bytes), with ``strength`` in (0, 1] and/or ``mask`` (H*W booleans, True = regenerate) or
        ``mask_image`` (PNG bytes, white = regenerate)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        request = pb.GenerateRequest(prompts=list(prompts), image_format=image_format_value(image_format))
        if num_inference_steps is not None:
            request.num_inference_steps = num_inference_steps
        if guidance_scale is not None:
            request.guidance_scale = guidance_scale
        if truncation_rate is not None:
            request.truncation_rate = truncation_rate
        if num_images_per_prompt is not None:
            request.num_images_per_prompt = num_images_per_prompt
        if seed is not None:
            if seed < 0 or seed >= 2**64:
                raise ValueError(f"seed must be between 0 and {2**64 - 1}, got {seed}")
            request.seed = seed
        if initial_latents is not None:
            request.initial_latents.extend(_flatten(initial_latents))
        if image_quality is not None:
            request.image_quality = image_quality
        if snapshots is not None:
            request.snapshots.CopyFrom(snapshots.to_proto() if isinstance(snapshots, SnapshotOptions) else snapshots)
        if request_id is not None:
            request.request_id = request_id
        if any(v is not None for v in (sampler, speed, prior, prior_weight, unmask_schedule, cf_embeddings)):
            options = request.sampler
            options.SetInParent()
            if sampler is not None:
                options.kind = enum_value("sampler", SAMPLERS, sampler)
            if speed is not None:
                options.speed = speed
            if prior is not None:
                options.prior = enum_value("prior", PRIORS, prior)
            if prior_weight is not None:
                options.prior_weight = prior_weight
            if unmask_schedule is not None:
                options.unmask_schedule.extend(int(n) for n in unmask_schedule)
            if cf_embeddings is not None:
                options.classifier_free_embeddings = enum_value("cf_embeddings", CF_EMBEDDINGS, cf_embeddings)
        if any(v is not None for v in (edit_tokens, edit_image, strength, mask, mask_image)):
            edit = request.edit
            edit.SetInParent()
            if edit_tokens is not None:
                edit.source_tokens.extend(_flatten(edit_tokens))
            if edit_image is not None:
                edit.source_image = bytes(edit_image)
            if strength is not None:
                edit.strength = strength
            if mask is not None:
                edit.mask.extend(bool(m) for m in mask)
            if mask_image is not None:
                edit.mask_image = bytes(mask_image)
        return request

    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        truncation_rate: Optional[float] = None,
        num_images_per_prompt: Optional[int] = None,
        seed: Optional[int] = None,
        initial_latents: Optional[Iterable[Any]] = None,
        image_format: Optional[ImageFormatLike] = "png",
        image_quality: Optional[int] = None,
        snapshots: Optional[Union[SnapshotOptions, pb.SnapshotOptions]] = None,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
        **options: Any,
    ) -> GenerateStream:
        """Starts a Generate call and returns its event stream (Queued, Started, Progress,
        Snapshot, Image, Completed). ``initial_latents`` may be flat or nested ([images][H*W]);
        ``timeout`` is the call's deadline in seconds; the sampler and edit ``options`` are those of
        ``build_request``."""
        request = self.build_request(
            prompts,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            truncation_rate=truncation_rate,
            num_images_per_prompt=num_images_per_prompt,
            seed=seed,
            initial_latents=initial_latents,
            image_format=image_format,
            image_quality=image_quality,
            snapshots=snapshots,
            request_id=request_id,
            **options,
        )
        return GenerateStream(self._stub.Generate(request, timeout=timeout, metadata=self._metadata))

    def generate_images(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        progress: Optional[Callable[[Progress], None]] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        **kwargs: Any,
    ) -> List[Image]:
        """Runs ``generate`` to the end and returns the images in index order. ``progress`` is
        called for every Progress event, ``on_event`` for every event; other keyword arguments
        are those of ``generate``."""
        images: List[Image] = []
        completed = False
        with self.generate(prompts, **kwargs) as stream:
            for event in stream:
                if on_event is not None:
                    on_event(event)
                if isinstance(event, Progress) and progress is not None:
                    progress(event)
                elif isinstance(event, Image):
                    images.append(event)
                elif isinstance(event, Completed):
                    completed = True
        if not completed:
            raise VqDiffusionError(grpc.StatusCode.UNKNOWN, "the stream ended without a completed event")
        return sorted(images, key=lambda i: i.index)
