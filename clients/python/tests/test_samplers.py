"""The vq-diffusion sampler, editing and inpainting through the Python client and its example.

Every case of the improved golden set (outputs of the original microsoft/VQ-Diffusion samplers, see its README)
is requested from its manifest parameters: the tokens after every step (snapshots), one progress event per
network call with the original's timesteps, and the original's pixels.
"""

from __future__ import annotations

import array
import io
import json
import os
import struct
import subprocess

import pytest
from PIL import Image as PilImage

from conftest import CLIENT_ROOT, IMPROVED_GOLDEN, REPO_ROOT
from vqdiffusion_client import Image, InvalidArgumentError, Progress, Snapshot, SnapshotOptions, Started

EXAMPLE = os.path.join(CLIENT_ROOT, "examples", "generate.py")
_TYPES = {"I64": "q", "U8": "B", "F32": "f"}


def read_safetensors(path: str) -> dict:
    """The tensors of a safetensors file as (shape, flat list) pairs (no numpy needed)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        values = array.array(_TYPES[entry["dtype"]])
        values.frombytes(data[8 + length + begin:8 + length + end])
        tensors[name] = (entry["shape"], values.tolist())
    return tensors


def _manifest() -> dict:
    with open(os.path.join(IMPROVED_GOLDEN, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


CASES = _manifest()["cases"]


def case_request(name: str) -> "tuple[list, dict, list]":
    """(prompts, generate() keyword arguments, rows): rows[i] is the original's batch row of prompt-major image i."""
    c = CASES[name]
    p = c["params"]
    prompts = p["prompts"]
    if p["kind"] == "edit":
        content = read_safetensors(os.path.join(IMPROVED_GOLDEN, c["file"]))["content_tokens_in"][1]
        kwargs = dict(seed=p["seed"], sampler="vq-diffusion", edit_tokens=content, strength=p["filter_ratio"])
        return prompts, kwargs, list(range(len(prompts)))
    speed = p.get("infer_speed", 1)
    fast = int(speed) >= 2
    kwargs = dict(
        seed=p["seed"],
        num_images_per_prompt=p["replicate"],
        guidance_scale=p["guidance_scale"],
        truncation_rate=p["truncation_rate"],
        sampler="vq-diffusion",
        speed=speed,
        cf_embeddings="learned" if p["learnable_cf"] else "empty-prompt",
    )
    if not fast:
        kwargs["prior"] = {0: "none", 1: "high-quality", 2: "purity"}[p["prior_rule"]]
        kwargs["prior_weight"] = p["prior_weight"]
        if isinstance(c.get("n_sample"), list):
            kwargs["unmask_schedule"] = c["n_sample"]
    replicate = p["replicate"]
    rows = [k * len(prompts) + q for q in range(len(prompts)) for k in range(replicate)]
    return prompts, kwargs, rows


def _rgb(png: bytes) -> bytes:
    with PilImage.open(io.BytesIO(png)) as img:
        return img.convert("RGB").tobytes()


def _within_decoder_rounding(expected, actual: bytes) -> None:
    assert len(expected) == len(actual)
    diffs = [abs(a - b) for a, b in zip(expected, actual) if a != b]
    assert not diffs or max(diffs) <= 1, f"max |diff| {max(diffs)}"
    assert len(diffs) < 0.005 * len(expected), f"{len(diffs)} of {len(expected)} values differ"


def _golden_image(golden: dict, row: int) -> list:
    shape, values = golden["images_uint8_nhwc"]
    size = shape[1] * shape[2] * shape[3]
    return values[row * size:(row + 1) * size]


@pytest.fixture()
def vq_client(improved_server):
    from vqdiffusion_client import Client

    with Client(improved_server.address) as c:
        yield c


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_reproduces_the_original(vq_client, name):
    c = CASES[name]
    golden = read_safetensors(os.path.join(IMPROVED_GOLDEN, c["file"]))
    prompts, kwargs, rows = case_request(name)
    step_t = golden["step_t"][1]
    (steps, batch, pixels), step_tokens = golden["step_tokens"]
    events = list(vq_client.generate(prompts, snapshots=SnapshotOptions(every_n_steps=1, include_tokens=True), **kwargs))

    started = next(e for e in events if isinstance(e, Started))
    assert (started.sampler, started.total_steps) == ("vq-diffusion", c["num_steps"])
    assert list(started.timesteps) == step_t
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.timestep for p in progress] == step_t
    assert all(p.total_steps == steps for p in progress)

    snapshots = [e for e in events if isinstance(e, Snapshot)]
    assert len(snapshots) == steps * batch
    for s in range(steps):
        for i, row in enumerate(rows):
            expected = step_tokens[(s * batch + row) * pixels:(s * batch + row + 1) * pixels]
            assert list(snapshots[s * batch + i].tokens) == expected, f"{name}: step {s}, image {i}"

    images = [e for e in events if isinstance(e, Image)]
    assert [i.index for i in images] == list(range(batch))
    for i, row in enumerate(rows):
        _within_decoder_rounding(_golden_image(golden, row), _rgb(images[i].data))


def test_started_and_model_info_describe_the_samplers(vq_client):
    info = vq_client.model_info()
    assert [s.name for s in info.samplers] == ["diffusers", "vq-diffusion"]
    vq = info.samplers[1]
    assert {(s.speed, s.network_calls) for s in vq.speeds} >= {(2.0, 51), (4.0, 26)}
    images = vq_client.generate_images("a red car", sampler="vq-diffusion", speed=10, seed=1,
                                       on_event=lambda e: isinstance(e, Started) and _check_started(e))
    assert len(images) == 1


def _check_started(e: Started) -> None:
    assert (e.sampler, e.total_steps, e.speed, e.prior, e.num_inference_steps) == ("vq-diffusion", 11, 10.0, "none", 100)


def test_inpainting_keeps_the_source_outside_the_mask(vq_client):
    source = [(p * 5) % 64 for p in range(64)]
    mask = [p // 8 >= 4 for p in range(64)]
    events = list(vq_client.generate("a red car", num_inference_steps=6, seed=2, edit_tokens=source, mask=mask,
                                     snapshots=SnapshotOptions(every_n_steps=1, include_tokens=True)))
    snapshots = [e for e in events if isinstance(e, Snapshot)]
    assert len(snapshots) == 6
    for s in snapshots:
        assert all(s.tokens[p] == source[p] for p in range(64) if not mask[p])


@pytest.mark.parametrize("kwargs, field", [
    (dict(sampler="vq-diffusion", speed=0.0), "sampler.speed"),
    (dict(sampler="vq-diffusion", prior="purity"), "sampler.unmask_schedule"),
    (dict(edit_tokens=[64] * 64, strength=0.5), "edit.source_tokens[0]"),
    (dict(edit_image=b"not an image", strength=0.5), "edit.source_image"),
    (dict(edit_tokens=[1] * 64, strength=3.0), "edit.strength"),
    (dict(edit_tokens=[1] * 64, mask=[False] * 64), "edit.mask"),
])
def test_invalid_sampler_and_edit_fields_are_named(vq_client, kwargs, field):
    with pytest.raises(InvalidArgumentError) as e:
        list(vq_client.generate("a", **kwargs))
    assert e.value.field == field


def test_unknown_sampler_name_is_a_value_error(vq_client):
    with pytest.raises(ValueError):
        vq_client.build_request("a", sampler="ddim")


def test_vq_diffusion_cross_client_request(vq_client):
    # The cross-client vq-diffusion request; VQD_CROSS_CLIENT_OUT receives "$OUT.vq.<index>".
    images = vq_client.generate_images(
        ["a photo of a cat", "a red car"], guidance_scale=3.0, truncation_rate=0.9, seed=123,
        sampler="vq-diffusion", speed=4, edit_tokens=[(i * 5) % 64 for i in range(128)],
        mask=[p // 8 >= 4 for p in range(64)],
    )
    assert [i.index for i in images] == [0, 1]
    out = os.environ.get("VQD_CROSS_CLIENT_OUT")
    if out:
        for image in images:
            with open(f"{out}.vq.{image.index}", "wb") as f:
                f.write(image.data)


def _run_example(*args):
    return subprocess.run(["/usr/bin/python3", EXAMPLE, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def _example_flags(name: str, tmp_path) -> list:
    prompts, kwargs, _ = case_request(name)
    flags = []
    for p in prompts:
        flags += ["--prompt", p]
    for key, flag in [("seed", "--seed"), ("num_images_per_prompt", "--images-per-prompt"), ("guidance_scale", "--guidance-scale"),
                      ("truncation_rate", "--truncation-rate"), ("sampler", "--sampler"), ("speed", "--speed"), ("prior", "--prior"),
                      ("prior_weight", "--prior-weight"), ("cf_embeddings", "--cf-embeddings"), ("strength", "--strength")]:
        if key in kwargs:
            flags += [flag, str(kwargs[key])]
    if "unmask_schedule" in kwargs:
        schedule = tmp_path / "schedule.json"
        schedule.write_text(json.dumps(kwargs["unmask_schedule"]))
        flags += ["--unmask-schedule", str(schedule)]
    if "edit_tokens" in kwargs:
        tokens = kwargs["edit_tokens"]
        per_image = len(tokens) // len(prompts)
        source = tmp_path / "source.json"
        source.write_text(json.dumps([tokens[i:i + per_image] for i in range(0, len(tokens), per_image)]))
        flags += ["--edit-tokens", str(source)]
    return flags


@pytest.mark.parametrize("name", ["fast_time4_g5_2prompts", "hq_speed05_purity_g5", "edit_fr05"])
def test_example_script_reproduces_cases(improved_server, tmp_path, name):
    golden = read_safetensors(os.path.join(IMPROVED_GOLDEN, CASES[name]["file"]))
    _, _, rows = case_request(name)
    out = tmp_path / "out"
    r = _run_example("--server", improved_server.address, *_example_flags(name, tmp_path), "--output", str(out))
    assert r.returncode == 0, r.stderr
    steps = CASES[name]["num_steps"]
    assert f"{steps}/{steps}" in r.stderr
    assert sorted(os.listdir(out)) == [f"{i:03d}.png" for i in range(len(rows))]
    for i, row in enumerate(rows):
        _within_decoder_rounding(_golden_image(golden, row), _rgb((out / f"{i:03d}.png").read_bytes()))


def test_example_script_edit_image_and_mask(improved_server, tmp_path):
    source = tmp_path / "source.png"
    PilImage.new("RGB", (32, 32), (40, 120, 200)).save(source)
    mask = tmp_path / "mask.png"
    m = PilImage.new("RGB", (32, 32), (0, 0, 0))
    m.paste((255, 255, 255), (16, 0, 32, 32))
    m.save(mask)
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        r = _run_example("--server", improved_server.address, "--prompt", "a red car", "--seed", "4", "--sampler", "vq-diffusion",
                         "--speed", "10", "--edit-image", str(source), "--mask", str(mask), "--quiet", "--output", str(out))
        assert r.returncode == 0, r.stderr
        outs.append((out / "000.png").read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("args, message", [
    (["--sampler", "ddim"], "--sampler must be diffusers or vq-diffusion"),
    (["--prior", "best"], "--prior must be none, high-quality or purity"),
    (["--strength", "0.5"], "give --edit-tokens FILE or --edit-image FILE"),
    (["--sampler", "vq-diffusion", "--speed", "0"], "--speed: sampler.speed must be"),
    (["--edit-image", "/nonexistent.png", "--strength", "0.5"], "--edit-image /nonexistent.png"),
])
def test_example_script_sampler_errors_exit_2(improved_server, tmp_path, args, message):
    r = _run_example("--server", improved_server.address, "--prompt", "a", *args, "--output", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
