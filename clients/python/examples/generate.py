#!/usr/bin/python3
"""`vqd generate` against a VqDiffusion.Grpc server, with the Python client.

usage: generate.py --server URL --prompt TEXT [--prompt TEXT ...] [--steps N] [--guidance-scale G]
                   [--truncation-rate R] [--images-per-prompt K] [--seed S] [--latents FILE]
                   [--sampler diffusers|vq-diffusion] [--speed S] [--prior none|high-quality|purity]
                   [--prior-weight W] [--unmask-schedule FILE] [--cf-embeddings learned|empty-prompt]
                   [--edit-tokens FILE | --edit-image FILE] [--strength R] [--mask FILE]
                   [--format png|jpeg|webp] [--quality Q] [--quiet] --output DIR

Writes DIR/000.png, DIR/001.png, ... in the server's image order (prompt 0's images, then
prompt 1's, ...). Exit codes: 0 ok, 2 bad input (locally or INVALID_ARGUMENT), 1 other errors.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vqdiffusion_client import (  # noqa: E402
    Client,
    Image,
    InvalidArgumentError,
    Progress,
    Started,
    VqDiffusionError,
    save_images,
)

USAGE = __doc__.split("\n\n")[1]

# Request field -> the flag that sets it (for error messages).
FIELD_FLAGS = {
    "prompts": "--prompt",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "truncation_rate": "--truncation-rate",
    "num_images_per_prompt": "--images-per-prompt",
    "seed": "--seed",
    "initial_latents": "--latents",
    "image_format": "--format",
    "image_quality": "--quality",
    "sampler.kind": "--sampler",
    "sampler.speed": "--speed",
    "sampler.prior": "--prior",
    "sampler.prior_weight": "--prior-weight",
    "sampler.unmask_schedule": "--unmask-schedule",
    "sampler.classifier_free_embeddings": "--cf-embeddings",
    "edit.source_tokens": "--edit-tokens",
    "edit.source_image": "--edit-image",
    "edit.strength": "--strength",
    "edit.mask": "--mask",
    "edit.mask_image": "--mask",
}

SAMPLERS = ("diffusers", "vq-diffusion")
PRIORS = ("none", "high-quality", "purity")
CF_EMBEDDINGS = ("learned", "empty-prompt")

U64_MAX = 2**64 - 1


class UsageError(Exception):
    pass


class Options:
    def __init__(self) -> None:
        self.server: Optional[str] = None
        self.prompts: List[str] = []
        self.steps: Optional[int] = None
        self.guidance_scale: Optional[float] = None
        self.truncation_rate: Optional[float] = None
        self.images_per_prompt: Optional[int] = None
        self.seed: Optional[int] = None
        self.latents: Optional[str] = None
        self.format = "png"
        self.quality: Optional[int] = None
        self.output: Optional[str] = None
        self.quiet = False
        self.sampler: Optional[str] = None
        self.speed: Optional[float] = None
        self.prior: Optional[str] = None
        self.prior_weight: Optional[float] = None
        self.unmask_schedule: Optional[str] = None
        self.cf_embeddings: Optional[str] = None
        self.edit_tokens: Optional[str] = None
        self.edit_image: Optional[str] = None
        self.strength: Optional[float] = None
        self.mask: Optional[str] = None


def _int(flag: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise UsageError(f"{flag} must be an integer, got '{value}'.") from None


def _float(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag} must be a number, got '{value}'.") from None


def parse_args(args: List[str]) -> Options:
    o = Options()
    i = 0
    while i < len(args):
        arg = args[i]
        flag, inline = arg, None
        if arg.startswith("--") and "=" in arg:
            flag, inline = arg.split("=", 1)

        def value() -> str:
            nonlocal i
            if inline is not None:
                return inline
            if i + 1 >= len(args):
                raise UsageError(f"{flag} needs a value.")
            i += 1
            return args[i]

        if flag == "--server":
            o.server = value()
        elif flag == "--prompt":
            o.prompts.append(value())
        elif flag == "--steps":
            o.steps = _int(flag, value())
        elif flag == "--guidance-scale":
            o.guidance_scale = _float(flag, value())
        elif flag == "--truncation-rate":
            o.truncation_rate = _float(flag, value())
        elif flag == "--images-per-prompt":
            o.images_per_prompt = _int(flag, value())
        elif flag == "--seed":
            s = value()
            if not s.isdigit() or int(s) > U64_MAX:
                raise UsageError(f"--seed must be an integer between 0 and {U64_MAX}, got '{s}'.")
            o.seed = int(s)
        elif flag == "--latents":
            o.latents = value()
        elif flag == "--format":
            f = value()
            if f.lower() not in ("png", "jpeg", "jpg", "webp"):
                raise UsageError(f"--format must be png, jpeg or webp, got '{f}'.")
            o.format = f.lower()
        elif flag == "--quality":
            o.quality = _int(flag, value())
            if not 1 <= o.quality <= 100:
                raise UsageError(f"--quality must be between 1 and 100, got {o.quality}.")
        elif flag == "--output":
            o.output = value()
        elif flag == "--quiet":
            o.quiet = True
        elif flag == "--sampler":
            o.sampler = _choice(flag, value(), SAMPLERS)
        elif flag == "--speed":
            o.speed = _float(flag, value())
        elif flag == "--prior":
            o.prior = _choice(flag, value(), PRIORS)
        elif flag == "--prior-weight":
            o.prior_weight = _float(flag, value())
        elif flag == "--unmask-schedule":
            o.unmask_schedule = value()
        elif flag == "--cf-embeddings":
            o.cf_embeddings = _choice(flag, value(), CF_EMBEDDINGS)
        elif flag == "--edit-tokens":
            o.edit_tokens = value()
        elif flag == "--edit-image":
            o.edit_image = value()
        elif flag == "--strength":
            o.strength = _float(flag, value())
        elif flag == "--mask":
            o.mask = value()
        else:
            raise UsageError(f"unknown option '{arg}'.")
        i += 1

    if o.edit_tokens and o.edit_image:
        raise UsageError("--edit-tokens and --edit-image cannot be used together (one source).")
    if (o.strength is not None or o.mask) and not (o.edit_tokens or o.edit_image):
        raise UsageError("--strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE.")
    if not o.server:
        raise UsageError("--server URL is required.")
    if not o.prompts:
        raise UsageError("at least one --prompt is required.")
    if not o.output:
        raise UsageError("--output DIR is required.")
    return o


def _choice(flag: str, value: str, choices) -> str:
    if value.lower() not in choices:
        raise UsageError(f"{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, got '{value}'.")
    return value.lower()


def read_latents(path: str, flag: str = "--latents") -> List[List[int]]:
    """--latents / --edit-tokens FILE: a JSON array of integer arrays, shape [images, H*W] (the server checks the shape)."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {path}: {e}") from None
    if not isinstance(doc, list):
        raise UsageError(f"{flag} {path}: expected a JSON array of integer arrays.")
    for r, row in enumerate(doc):
        if not isinstance(row, list):
            raise UsageError(f"{flag} {path}: row {r} must be an array of integers (H*W).")
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int):
                raise UsageError(f"{flag} {path}: row {r}, column {c} is not an integer.")
    return doc


def read_schedule(path: str) -> List[int]:
    """--unmask-schedule FILE: a JSON array of integers, tokens per timestep (index = t)."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--unmask-schedule {path}: {e}") from None
    if not isinstance(doc, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in doc):
        raise UsageError(f"--unmask-schedule {path}: expected a JSON array of integers (one per timestep, index = t).")
    return doc


def read_bytes(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e}") from None


class ProgressBar:
    """A one-line progress bar on stderr: [#####.....] 37/100 t=63 4.2 it/s"""

    WIDTH = 30

    def __init__(self, stream=sys.stderr) -> None:
        self._stream = stream
        self._interactive = stream.isatty()
        self._start = time.monotonic()

    def report(self, p: Progress) -> None:
        last = p.completed_steps == p.total_steps
        if not self._interactive and not last and p.completed_steps % max(1, p.total_steps // 10) != 0:
            return
        filled = self.WIDTH if p.total_steps == 0 else p.completed_steps * self.WIDTH // p.total_steps
        rate = p.completed_steps / max(time.monotonic() - self._start, 1e-9)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {p.completed_steps}/{p.total_steps} t={p.timestep} {rate:.1f} it/s"
        self._stream.write("\r" + line if self._interactive else line + "\n")
        if last and self._interactive:
            self._stream.write("\n")
        self._stream.flush()


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        o = parse_args(argv)
        latents = read_latents(o.latents) if o.latents else None
        options = dict(
            sampler=o.sampler,
            speed=o.speed,
            prior=o.prior,
            prior_weight=o.prior_weight,
            unmask_schedule=read_schedule(o.unmask_schedule) if o.unmask_schedule else None,
            cf_embeddings=o.cf_embeddings,
            edit_tokens=read_latents(o.edit_tokens, "--edit-tokens") if o.edit_tokens else None,
            edit_image=read_bytes("--edit-image", o.edit_image) if o.edit_image else None,
            strength=o.strength,
            mask_image=read_bytes("--mask", o.mask) if o.mask else None,
        )
        bar = None if o.quiet else ProgressBar()
        seed = o.seed
        with Client(o.server) as client:
            images: List[Image] = []
            stream = client.generate(
                o.prompts,
                num_inference_steps=o.steps,
                guidance_scale=o.guidance_scale,
                truncation_rate=o.truncation_rate,
                num_images_per_prompt=o.images_per_prompt,
                seed=o.seed,
                initial_latents=latents,
                image_format=o.format,
                image_quality=o.quality,
                **options,
            )
            with stream:
                for event in stream:
                    if isinstance(event, Started):
                        seed = event.seed
                    elif isinstance(event, Progress) and bar is not None:
                        bar.report(event)
                    elif isinstance(event, Image):
                        images.append(event)
        save_images(images, o.output)
        print(f"seed: {seed}; wrote {len(images)} image(s) to {o.output}", file=sys.stderr)
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InvalidArgumentError as e:
        field = e.field
        flag = None
        if field:
            path = field.split("[")[0]
            flag = FIELD_FLAGS.get(path) or FIELD_FLAGS.get(path.split(".")[0])
        where = f"{flag} ({field})" if flag else (field or "request")
        print(f"error: {where}: {e.message}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad server address or argument caught by the client library
        print(f"error: {e}", file=sys.stderr)
        return 2
    except VqDiffusionError as e:
        print(f"error: {e.code.name}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: cancelled.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
