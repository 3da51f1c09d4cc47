#!/usr/bin/python3
"""`vqd generate` against a VqDiffusion.Grpc server, with the Python client.

usage: generate.py --server URL --prompt TEXT [--prompt TEXT ...] [--steps N] [--guidance-scale G]
                   [--truncation-rate R] [--images-per-prompt K] [--seed S] [--latents FILE]
                   [--sampler diffusers|vq-diffusion] [--speed S] [--prior none|high-quality|purity]
                   [--prior-weight W] [--unmask-schedule FILE] [--cf-embeddings learned|empty-prompt]
                   [--edit-tokens FILE | --edit-image FILE] [--strength R] [--mask FILE]
                   [--format png|jpeg|webp] [--quality Q] [--api-key KEY] [--ca-cert FILE]
                   [--quiet] --output DIR

Writes DIR/000.png, DIR/001.png, ... in the server's image order (prompt 0's images, then
prompt 1's, ...). It rejects what `vqd generate --server URL` rejects, with vqd's line minus its
"vqd: " prefix and vqd's exit code: 2 for bad input (here or INVALID_ARGUMENT from the server),
1 for other errors, 130 when interrupted. --api-key KEY (else $VQD_API_KEY) is sent as
"authorization: Bearer KEY" on every call; --ca-cert FILE (else $VQD_CA_CERT) holds the PEM root
certificate(s) to trust for an https:// server (else the system's roots).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import ssl
import struct
import sys
import time
from typing import Any, List, Optional
from urllib.parse import urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# gRPC core's own log lines (e.g. "Handshake failed ..." when a TLS certificate is not trusted) would add stderr lines
# to the one error line; the failure itself is reported by the call's status.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from vqdiffusion_client import (  # noqa: E402
    Client,
    Image,
    InvalidArgumentError,
    Progress,
    Started,
    VqDiffusionError,
)

USAGE = __doc__.split("\n\n")[1]

# Request field -> the flag that sets it, as vqd's CliApp.ToFlag.
FIELD_FLAGS = {
    "image_format": "--format",
    "image_quality": "--quality",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "truncation_rate": "--truncation-rate",
    "num_images_per_prompt": "--images-per-prompt",
    "initial_latents": "--latents",
    "seed": "--seed",
    "sampler.kind": "--sampler",
    "sampler.speed": "--speed",
    "sampler.prior": "--prior",
    "sampler.prior_weight": "--prior-weight",
    "sampler.classifier_free_embeddings": "--cf-embeddings",
    "edit.source_image": "--edit-image",
    "edit.strength": "--strength",
    "edit.mask": "--mask",
    "edit.mask_image": "--mask",
}
FIELD_PREFIXES = (
    ("sampler.unmask_schedule", "--unmask-schedule"),
    ("edit.source_tokens", "--edit-tokens"),
    ("prompts", "--prompt"),
)

SAMPLERS = ("diffusers", "vq-diffusion")
PRIORS = ("none", "high-quality", "purity")
CF_EMBEDDINGS = ("learned", "empty-prompt")
LOCAL_ONLY = ("--device", "--dtype", "--variant")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1
JSON_MAX_DEPTH = 64  # System.Text.Json's default, as vqd reads its files

# .NET's number syntax (NumberStyles.Integer without white space; NumberStyles.Float), ASCII digits only.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DOTNET_WHITE = "\t\n\v\f\r "
_LINE_ENDINGS = re.compile("\r\n|[\n\r\f\x85\u2028\u2029]")


class UsageError(Exception):
    """Bad input found here: one line, exit code 2 (vqd's UsageException)."""


class ArgumentError(Exception):
    """A request field out of range, named like the server names it (vqd's GenerationArgumentException)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class Options:
    def __init__(self) -> None:
        self.model: Optional[str] = None
        self.server: Optional[str] = None
        self.prompts: List[str] = []
        self.steps: Optional[int] = None
        self.guidance_scale: Optional[float] = None
        self.truncation_rate: Optional[float] = None
        self.images_per_prompt: int = 1
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
        self.api_key: Optional[str] = None
        self.ca_cert: Optional[str] = None

    @property
    def is_edit(self) -> bool:
        return any(v is not None for v in (self.edit_tokens, self.edit_image, self.strength, self.mask))


def _int(flag: str, value: str) -> int:
    """int.TryParse(value, NumberStyles.AllowLeadingSign, InvariantCulture)."""
    if _INTEGER.fullmatch(value) and INT32_MIN <= int(value) <= INT32_MAX:
        return int(value)
    raise UsageError(f"{flag} must be an integer, got '{value}'.")


def _double(flag: str, value: str) -> float:
    """double.TryParse(value, NumberStyles.Float, InvariantCulture): white space, sign, point, exponent, Infinity, NaN."""
    text = value.strip(_DOTNET_WHITE)
    if _DECIMAL.fullmatch(text):
        return float(text)
    special = text.upper()
    if special in ("INFINITY", "+INFINITY"):
        return math.inf
    if special == "-INFINITY":
        return -math.inf
    if special in ("NAN", "+NAN", "-NAN"):
        return math.nan
    raise UsageError(f"{flag} must be a number, got '{value}'.")


def _float(flag: str, value: str) -> float:
    """float.TryParse: the same syntax, rounded to float32 (out of range = infinity), as the proto field holds it."""
    x = _double(flag, value)
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _choice(flag: str, value: str, choices) -> str:
    """vqd's SamplerNames.TryParse*: trimmed, case-insensitive."""
    key = value.strip().upper()
    for name in choices:
        if key == name.upper():
            return name
    raise UsageError(f"{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, got '{value}'.")


def check_api_key(key: str, source: str = "--api-key") -> str:
    """vqd's ApiKeyProblem for --api-key or $VQD_API_KEY (``source``): not empty, printable ASCII without spaces;
    the key is never echoed."""
    if not key:
        raise UsageError(f"{source} must not be empty.")
    if any(not "\x21" <= c <= "\x7e" for c in key):
        raise UsageError(f"{source} must be printable ASCII without spaces.")
    return key


def parse_args(args: List[str]) -> Options:
    """vqd's GenerateOptions.Parse, flag for flag and check for check, in the same order."""
    o = Options()
    local_only: Optional[str] = None
    remote_only: Optional[str] = None
    i = 0
    while i < len(args):
        arg = args[i]
        flag, inline = arg, None
        eq = arg.find("=")
        if arg.startswith("--") and eq > 0:
            flag, inline = arg[:eq], arg[eq + 1:]

        def value() -> str:
            nonlocal i
            if inline is not None:
                return inline
            if i + 1 >= len(args):
                raise UsageError(f"{flag} needs a value.")
            i += 1
            return args[i]

        if flag == "--model":
            o.model = value()
        elif flag == "--server":
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
            if not _DIGITS.fullmatch(s) or int(s) > U64_MAX:
                raise UsageError(f"--seed must be an integer between 0 and {U64_MAX}, got '{s}'.")
            o.seed = int(s)
        elif flag == "--latents":
            o.latents = value()
        elif flag == "--sampler":
            o.sampler = _choice(flag, value(), SAMPLERS)
        elif flag == "--speed":
            o.speed = _double(flag, value())
        elif flag == "--prior":
            o.prior = _choice(flag, value(), PRIORS)
        elif flag == "--prior-weight":
            o.prior_weight = _double(flag, value())
        elif flag == "--cf-embeddings":
            o.cf_embeddings = _choice(flag, value(), CF_EMBEDDINGS)
        elif flag == "--unmask-schedule":
            o.unmask_schedule = value()
        elif flag == "--edit-tokens":
            o.edit_tokens = value()
        elif flag == "--edit-image":
            o.edit_image = value()
        elif flag == "--strength":
            o.strength = _double(flag, value())
        elif flag == "--mask":
            o.mask = value()
        elif flag == "--format":
            f = value()
            name = f.strip().lower()
            name = "jpeg" if name == "jpg" else name
            if name not in EXTENSIONS:
                raise UsageError(f"--format must be png, jpeg or webp, got '{f}'.")
            o.format = name
        elif flag == "--quality":
            o.quality = _int(flag, value())
            if not 1 <= o.quality <= 100:
                raise UsageError(f"--quality must be between 1 and 100, got {o.quality}.")
        elif flag == "--output":
            o.output = value()
        elif flag == "--api-key":
            o.api_key = check_api_key(value())
            remote_only = remote_only or flag
        elif flag == "--ca-cert":
            o.ca_cert = value()
            if o.ca_cert == "":
                raise UsageError("--ca-cert must not be empty.")
            remote_only = remote_only or flag
        elif flag in LOCAL_ONLY:
            value()
            local_only = local_only or flag
        elif flag == "--quiet":
            o.quiet = True
        else:
            raise UsageError(f"unknown option '{arg}'.")
        i += 1

    if o.server is None and remote_only is not None:
        raise UsageError(f"{remote_only} needs --server (it is for reaching a running server).")
    if o.server is not None:
        if o.model is not None:
            raise UsageError("--model and --server cannot be used together (--model runs locally, --server asks a server).")
        if local_only is not None:
            raise UsageError(f"{local_only} cannot be used with --server (the server chooses its device, dtype and weights).")
    if o.edit_tokens is not None and o.edit_image is not None:
        raise UsageError("--edit-tokens and --edit-image cannot be used together (one source).")
    if o.is_edit and o.edit_tokens is None and o.edit_image is None:
        raise UsageError("--strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE.")
    if not o.prompts:
        raise UsageError("at least one --prompt is required.")
    if not o.output:
        raise UsageError("--output DIR is required.")
    if o.server is None:
        # Where vqd would run the model in-process (this example has no local mode).
        raise UsageError("--server URL is required (http://host:port); this example has no local mode.")
    return o


def server_address(url: str) -> str:
    """vqd's check: an absolute http:// or https:// URL; returns scheme://host:port for the client."""
    bad = UsageError(f"--server must be an http:// or https:// URL (http://host:port), got '{url}'.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise bad from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise bad
    return f"{scheme}://{parts.netloc}"


PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def read_ca_cert(path: str, source: str) -> bytes:
    """vqd's CaCertFile.Read: a readable file with at least one PEM certificate, each of which decodes."""
    data = read_bytes(source, path)
    if PEM_CERTIFICATE not in data:
        raise UsageError(f"{source} {path}: no PEM certificate (-----BEGIN CERTIFICATE-----).")
    blocks = _PEM_BLOCK.findall(data)
    if blocks:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
        except (ssl.SSLError, ValueError):
            raise UsageError(f"{source} {path}: not a valid PEM certificate.") from None
    return data


def connection(o: Options) -> "tuple[str, Optional[str], Optional[bytes]]":
    """vqd's checks of the connection flags, in its order: the --server URL; $VQD_API_KEY when --api-key is absent
    (empty = unset); the CA (--ca-cert, else $VQD_CA_CERT) for https:// only; then its file. Returns the client's
    address, API key and root certificates."""
    address = server_address(o.server)
    api_key = o.api_key
    if api_key is None and os.environ.get("VQD_API_KEY"):
        api_key = check_api_key(os.environ["VQD_API_KEY"], "VQD_API_KEY")
    ca_cert = o.ca_cert if o.ca_cert is not None else (os.environ.get("VQD_CA_CERT") or None)
    source = "--ca-cert" if o.ca_cert is not None else "VQD_CA_CERT"
    if ca_cert is not None and not address.startswith("https://"):
        raise UsageError(f"{source} needs an https:// --server.")
    roots = None if ca_cert is None else read_ca_cert(ca_cert, source)
    return address, api_key, roots


def to_flag(field: str) -> str:
    """The flag of a request field path (prompts[1] -> --prompt[1]), as vqd names it."""
    if field in FIELD_FLAGS:
        return FIELD_FLAGS[field]
    for prefix, flag in FIELD_PREFIXES:
        if field.startswith(prefix):
            return flag + field[len(prefix):]
    return field


def one_line(text: str) -> str:
    return _LINE_ENDINGS.sub(" ", text)


def dotnet_io_message(path: str, e: OSError) -> str:
    """The message .NET's File.ReadAllBytes gives for this failure (vqd prints it)."""
    full = os.path.abspath(path)
    if e.errno == errno.ENOENT and os.path.isdir(os.path.dirname(full)):
        return f"Could not find file '{full}'."
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"Could not find a part of the path '{full}'."
    if e.errno in (errno.EACCES, errno.EPERM, errno.EBADF, errno.EISDIR):
        return f"Access to the path '{full}' is denied."
    if e.errno == errno.ENAMETOOLONG:
        return f"The path '{full}' is too long, or a component of the specified path is too long."
    return f"{os.strerror(e.errno) if e.errno else e} : '{full}'"


def read_bytes(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{flag} {path}: {dotnet_io_message(path, e)}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(doc: Any) -> int:
    depth, level = 0, [(doc, 1)]
    while level:
        v, d = level.pop()
        if isinstance(v, list):
            depth = max(depth, d)
            level.extend((x, d + 1) for x in v)
        elif isinstance(v, dict):
            depth = max(depth, d)
            level.extend((x, d + 1) for x in v.values())
    return depth


def read_json(flag: str, path: str) -> Any:
    """The file as strict JSON (no NaN/Infinity, at most 64 levels), as System.Text.Json reads it: UTF-8 whose
    invalid bytes are errors outside strings and kept inside them (JsonDocument checks string contents only on use)."""
    data = read_bytes(flag, path)
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise UsageError(f"{flag} {path}: not valid JSON.") from None
    if _depth(doc) > JSON_MAX_DEPTH:
        raise UsageError(f"{flag} {path}: not valid JSON.")
    return doc


def _is_integer(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def read_latents(path: str, images: int, pixels: int, flag: str = "--latents") -> List[int]:
    """vqd's LatentsFile.Read: [images][H*W] integers, flattened, clamped to int32 (the server names values out of range)."""
    doc = read_json(flag, path)
    if not isinstance(doc, list):
        raise UsageError(f"{flag} {path}: expected a JSON array of {images} integer arrays.")
    if len(doc) != images:
        raise UsageError(f"{flag} {path}: has {len(doc)} rows, expected {images} (prompts × images per prompt).")
    flat: List[int] = []
    for r, row in enumerate(doc):
        if not isinstance(row, list) or len(row) != pixels:
            raise UsageError(f"{flag} {path}: row {r} must be an array of {pixels} integers (H·W).")
        for c, v in enumerate(row):
            if not _is_integer(v, INT64_MIN, INT64_MAX):
                raise UsageError(f"{flag} {path}: row {r}, column {c} is not an integer.")
            flat.append(min(max(v, INT32_MIN), INT32_MAX))
    return flat


def read_schedule(path: str) -> List[int]:
    """vqd's ScheduleFile.Read: a JSON array of int32 counts, tokens per timestep (index = t)."""
    flag = "--unmask-schedule"
    doc = read_json(flag, path)
    if not isinstance(doc, list):
        raise UsageError(f"{flag} {path}: expected a JSON array of integers (one per timestep, index = t).")
    for n, v in enumerate(doc):
        if not _is_integer(v, INT32_MIN, INT32_MAX):
            raise UsageError(f"{flag} {path}: entry {n} is not an integer.")
    return doc


class ProgressBar:
    """vqd's progress bar on stderr: [#####.....] 37/100 t=63 4.2 it/s"""

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


def generate(o: Options, client: Client) -> None:
    """vqd's GenerateRemoteAsync: the same checks in the same order, then the stream."""
    info = None
    # In the protocol 0 means "the server's default"; on the command line it is out of range, as in vqd.
    if o.steps == 0:
        info = client.model_info()
        raise ArgumentError("num_inference_steps", f"num_inference_steps must be between 1 and {info.num_train_timesteps}, got 0.")
    if o.images_per_prompt == 0:
        info = client.model_info()
        raise ArgumentError("num_images_per_prompt",
                            f"num_images_per_prompt must be between 1 and {info.limits.max_images_per_prompt}, got 0.")

    images = len(o.prompts) * max(o.images_per_prompt, 1)
    options: dict = {}
    if any(v is not None for v in (o.sampler, o.speed, o.prior, o.prior_weight, o.cf_embeddings, o.unmask_schedule)):
        options.update(sampler=o.sampler or "diffusers", speed=o.speed, prior=o.prior, prior_weight=o.prior_weight,
                       cf_embeddings=o.cf_embeddings,
                       unmask_schedule=read_schedule(o.unmask_schedule) if o.unmask_schedule is not None else None)
    if o.is_edit:
        if o.edit_tokens is not None:
            info = info or client.model_info()
            options["edit_tokens"] = read_latents(o.edit_tokens, images, info.latent_height * info.latent_width, "--edit-tokens")
        if o.edit_image is not None:
            options["edit_image"] = read_bytes("--edit-image", o.edit_image)
        options["strength"] = o.strength
        if o.mask is not None:
            options["mask_image"] = read_bytes("--mask", o.mask)
    latents = None
    if o.latents is not None:
        info = info or client.model_info()
        latents = read_latents(o.latents, images, info.latent_height * info.latent_width)

    bar = None if o.quiet else ProgressBar()
    seed: Optional[int] = None
    written = 0
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
                os.makedirs(o.output, exist_ok=True)
            elif isinstance(event, Progress) and bar is not None:
                bar.report(event)
            elif isinstance(event, Image):
                with open(os.path.join(o.output, f"{event.index:03d}.{EXTENSIONS[o.format]}"), "wb") as f:
                    f.write(event.data)
                written += 1
    if not o.quiet:
        print(f"seed: {seed}; wrote {written} image(s) to {o.output}", file=sys.stderr)


def _status_name(code: Any) -> str:
    """grpc.StatusCode.RESOURCE_EXHAUSTED -> ResourceExhausted (Grpc.Core's StatusCode names, as vqd prints them)."""
    return "".join(part.capitalize() for part in code.name.split("_"))


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    o: Optional[Options] = None
    try:
        o = parse_args(argv)
        address, api_key, roots = connection(o)
        with Client(address, api_key=api_key, root_certificates=roots) as client:
            generate(o, client)
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ArgumentError as e:
        print(f"error: {to_flag(e.field)}: {e.reason}", file=sys.stderr)
        return 2
    except InvalidArgumentError as e:
        if e.field_violations:
            v = e.field_violations[0]
            print(f"error: {to_flag(v.field)}: {v.description}", file=sys.stderr)
        else:
            print(f"error: {one_line(e.message)}", file=sys.stderr)
        return 2
    except VqDiffusionError as e:
        detail = f": {one_line(e.message)}" if e.message else ""
        print(f"error: server {o.server if o else None}: {_status_name(e.code)}{detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled.", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
