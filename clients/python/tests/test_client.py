"""The Python client against a real server process (see conftest.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import grpc
import pytest
from PIL import Image as PilImage

from conftest import CLIENT_ROOT, GOLDEN_PNG, REPO_ROOT
from vqdiffusion_client import (
    Client,
    Completed,
    Image,
    InvalidArgumentError,
    Progress,
    Started,
    UnavailableError,
    VqDiffusionError,
    parse_target,
    save_images,
)
from vqdiffusion_client.errors import parse_field_violations
from vqdiffusion_client._generated.vqdiffusion_client_rpc import status_pb2

EXAMPLE = os.path.join(CLIENT_ROOT, "examples", "generate.py")


def _rgb(png: bytes) -> bytes:
    with PilImage.open(io.BytesIO(png)) as img:
        return img.convert("RGB").tobytes()


def _assert_within_decoder_rounding(expected: bytes, actual: bytes) -> None:
    """Same rule as the .NET tests: |diff| <= 1 everywhere, on < 0.5% of the values."""
    assert len(expected) == len(actual)
    diffs = [abs(a - b) for a, b in zip(expected, actual) if a != b]
    assert not diffs or max(diffs) <= 1, f"max |diff| {max(diffs)}"
    assert len(diffs) < 0.005 * len(expected), f"{len(diffs)} of {len(expected)} values differ"


def _golden(name: str) -> bytes:
    with open(os.path.join(GOLDEN_PNG, name), "rb") as f:
        return _rgb(f.read())


def test_full_generation_matches_diffusers_golden(client):
    events = list(client.generate(
        "a photo of a cat", num_inference_steps=10, guidance_scale=5.0, truncation_rate=1.0, seed=0,
    ))
    assert isinstance(events[0], Started) or events[0].__class__.__name__ == "Queued"
    started = next(e for e in events if isinstance(e, Started))
    assert started.seed == 0
    assert started.num_inference_steps == 10
    assert started.timesteps == tuple(range(9, -1, -1))
    assert isinstance(events[-1], Completed)
    assert events[-1].dropped_events == 0  # this client kept up
    images = [e for e in events if isinstance(e, Image)]
    assert len(images) == 1
    image = images[0]
    assert image.index == 0 and image.prompt_index == 0 and image.seed == 0
    assert image.mime_type == "image/png" and image.extension == "png"
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
    with PilImage.open(io.BytesIO(image.data)) as img:
        assert img.size == (image.width, image.height)
    _assert_within_decoder_rounding(_golden("pipeline_single_cfg_0.png"), _rgb(image.data))


def test_standard_request_cross_client_output(client):
    # The lead's standard request; VQD_CROSS_CLIENT_OUT receives the PNG bytes to compare clients.
    images = client.generate_images(
        ["a photo of a cat", "a red car"], num_inference_steps=7, guidance_scale=3.0,
        truncation_rate=0.9, num_images_per_prompt=1, seed=123, image_format="png",
    )
    assert [i.index for i in images] == [0, 1]
    assert [i.prompt_index for i in images] == [0, 1]
    assert all(i.mime_type == "image/png" and i.width == 32 for i in images)
    out = os.environ.get("VQD_CROSS_CLIENT_OUT")
    if out:
        # As the C#/TypeScript clients: "$OUT.<index>" per image, and "$OUT" = all PNGs concatenated
        # in index order.
        for image in images:
            with open(f"{out}.{image.index}", "wb") as f:
                f.write(image.data)
        with open(out, "wb") as f:
            f.write(b"".join(i.data for i in images))
    # Same request twice -> the same bytes (deterministic seed).
    again = client.generate_images(
        ["a photo of a cat", "a red car"], num_inference_steps=7, guidance_scale=3.0,
        truncation_rate=0.9, num_images_per_prompt=1, seed=123, image_format="png",
    )
    assert [i.data for i in again] == [i.data for i in images]


def test_progress_event_for_every_step_in_order(client):
    seen = []
    images = client.generate_images("a red car", num_inference_steps=12, seed=7, progress=seen.append)
    assert [p.completed_steps for p in seen] == list(range(1, 13))
    assert all(p.total_steps == 12 for p in seen)
    assert [p.timestep for p in seen] == list(range(11, -1, -1))
    assert all(isinstance(p, Progress) for p in seen)
    assert len(images) == 1


def test_cancel_mid_stream_then_next_request_succeeds(client):
    stream = client.generate(
        ["a photo of a cat", "a red car"], num_inference_steps=100, num_images_per_prompt=8, seed=1,
    )
    progress = 0
    after_cancel = []
    for event in stream:
        if stream.cancelled:
            after_cancel.append(event)
            continue
        if isinstance(event, Progress):
            progress += 1
            if progress == 3:
                stream.cancel()
    assert progress == 3
    assert stream.cancelled
    # Events already buffered may arrive, but never the images or the completion.
    assert not any(isinstance(e, (Image, Completed)) for e in after_cancel)

    images = client.generate_images("a photo of a cat", num_inference_steps=10, guidance_scale=5.0,
                                    truncation_rate=1.0, seed=0)
    _assert_within_decoder_rounding(_golden("pipeline_single_cfg_0.png"), _rgb(images[0].data))


def test_cancel_from_another_thread(client):
    stream = client.generate("a photo of a cat", num_inference_steps=100, num_images_per_prompt=8, seed=2)
    first_progress = threading.Event()
    timer = threading.Thread(target=lambda: (first_progress.wait(30), stream.cancel()))
    timer.start()
    kinds = []
    for event in stream:
        kinds.append(type(event).__name__)
        if isinstance(event, Progress):
            first_progress.set()
    timer.join()
    assert "Progress" in kinds and "Completed" not in kinds


def test_invalid_argument_names_the_field(client):
    with pytest.raises(InvalidArgumentError) as info:
        list(client.generate("a", truncation_rate=2.0))
    err = info.value
    assert isinstance(err, VqDiffusionError)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field == "truncation_rate"
    assert "truncation_rate must be in (0, 1]" in err.message
    assert err.field_violations[0].description


def test_invalid_prompt_index_in_field_path(client, server):
    info = client.model_info()
    too_long = "x" * (info.limits.max_prompt_characters + 1)
    with pytest.raises(InvalidArgumentError) as e:
        client.generate_images(["ok", too_long], num_inference_steps=1)
    assert e.value.field == "prompts[1]"


def test_deadline_exceeded(client):
    with pytest.raises(VqDiffusionError) as e:
        list(client.generate("a photo of a cat", num_inference_steps=100, num_images_per_prompt=8, timeout=0.05))
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_server_is_unavailable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}") as c:
        with pytest.raises(UnavailableError) as e:
            c.model_info(timeout=5)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_model_info(client):
    info = client.model_info()
    assert info.model_id == "tiny-ithq"
    assert info.num_codes == 64
    assert info.num_vector_embeds == 65
    assert (info.latent_height, info.latent_width) == (8, 8)
    assert (info.image_height, info.image_width) == (32, 32)
    assert info.default_num_inference_steps == 100
    assert info.default_guidance_scale == pytest.approx(5.0)
    assert info.default_truncation_rate == pytest.approx(1.0)
    assert info.limits.max_batch_size >= 16


def test_formats_and_save_images(client, tmp_path):
    for fmt, mime, ext, magic in [("jpeg", "image/jpeg", "jpg", b"\xff\xd8"), ("webp", "image/webp", "webp", b"RIFF")]:
        images = client.generate_images("a red car", num_inference_steps=2, num_images_per_prompt=2,
                                        seed=3, image_format=fmt, image_quality=80)
        assert [i.mime_type for i in images] == [mime, mime]
        assert all(i.data.startswith(magic) for i in images)
        paths = save_images(images, tmp_path / fmt)
        assert [os.path.basename(p) for p in paths] == [f"000.{ext}", f"001.{ext}"]


def test_initial_latents_nested_or_flat(client):
    info = client.model_info()
    pixels = info.latent_height * info.latent_width
    mask = info.num_vector_embeds - 1
    # Everything but the mask class fixed: one step keeps the given tokens.
    row = [i % info.num_codes for i in range(pixels)]
    nested = client.generate_images("a", num_inference_steps=1, seed=0, initial_latents=[row])
    flat = client.generate_images("a", num_inference_steps=1, seed=0, initial_latents=row)
    assert nested[0].data == flat[0].data
    with pytest.raises(InvalidArgumentError) as e:
        client.generate_images("a", num_inference_steps=1, initial_latents=[mask + 1] * pixels)
    assert e.value.field.startswith("initial_latents")


def test_parse_target():
    assert parse_target("http://127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert parse_target("https://example.com") == ("example.com:443", True)
    assert parse_target("localhost:1234") == ("localhost:1234", False)
    with pytest.raises(ValueError):
        parse_target("ftp://x:1")


def test_parse_status_details():
    status = status_pb2.Status(code=3, message="bad")
    bad = status_pb2.BadRequest()
    bad.field_violations.add(field="prompts[0]", description="empty")
    any_msg = status.details.add()
    any_msg.type_url = "type.googleapis.com/google.rpc.BadRequest"
    any_msg.value = bad.SerializeToString()
    other = status.details.add()
    other.type_url = "type.googleapis.com/google.rpc.DebugInfo"
    other.value = b"\x0a\x01x"
    violations = parse_field_violations(status.SerializeToString())
    assert [(v.field, v.description) for v in violations] == [("prompts[0]", "empty")]


def _run_example(*args):
    return subprocess.run(
        ["/usr/bin/python3", EXAMPLE, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )


def test_example_script_end_to_end(server, tmp_path):
    out = tmp_path / "out"
    r = _run_example("--server", server.address, "--prompt", "a photo of a cat", "--steps", "10",
                     "--guidance-scale", "5", "--truncation-rate", "1.0", "--seed", "0", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["000.png"]
    assert "10/10" in r.stderr and "seed: 0" in r.stderr
    with open(out / "000.png", "rb") as f:
        _assert_within_decoder_rounding(_golden("pipeline_single_cfg_0.png"), _rgb(f.read()))


def test_example_script_two_prompts_jpeg(server, tmp_path):
    out = tmp_path / "out"
    r = _run_example("--server", server.address, "--prompt", "a photo of a cat", "--prompt", "a red car",
                     "--images-per-prompt=2", "--steps", "3", "--format", "jpeg", "--quality", "70",
                     "--seed", "5", "--quiet", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert "[" not in r.stderr  # --quiet: no progress bar


def test_example_script_latents_file(server, client, tmp_path):
    info = client.model_info()
    pixels = info.latent_height * info.latent_width
    latents = tmp_path / "latents.json"
    latents.write_text("[" + ",".join(str(i % info.num_codes) for i in range(pixels)).join("[]") + "]")
    out = tmp_path / "out"
    r = _run_example("--server", server.address, "--prompt", "a", "--steps", "1", "--seed", "0",
                     "--latents", str(latents), "--output", str(out))
    assert r.returncode == 0, r.stderr
    expected = client.generate_images("a", num_inference_steps=1, seed=0,
                                      initial_latents=[i % info.num_codes for i in range(pixels)])
    assert (out / "000.png").read_bytes() == expected[0].data


def test_example_script_invalid_argument_exits_2(server, tmp_path):
    r = _run_example("--server", server.address, "--prompt", "a", "--truncation-rate", "2",
                     "--output", str(tmp_path / "o"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "truncation_rate" in lines[0] and "--truncation-rate" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a", "--output", "o"], "--server URL is required"),
    (["--server", "http://127.0.0.1:1", "--output", "o"], "at least one --prompt is required"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--steps", "x", "--output", "o"], "--steps must be an integer"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--format", "gif", "--output", "o"], "--format must be png, jpeg or webp"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--quality", "0", "--output", "o"], "--quality must be between 1 and 100"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--seed", "-1", "--output", "o"], "--seed must be an integer"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--bogus", "--output", "o"], "unknown option '--bogus'"),
    (["--server", "http://127.0.0.1:1", "--prompt", "a", "--unmask-schedule", "/nonexistent.json", "--output", "o"],
     "--unmask-schedule /nonexistent.json: Could not find file '/nonexistent.json'."),
])
def test_example_script_usage_errors_exit_2(args, message):
    r = _run_example(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_example_script_unreachable_server_exits_1(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _run_example("--server", f"http://127.0.0.1:{port}", "--prompt", "a", "--output", str(tmp_path / "o"))
    assert r.returncode == 1
    assert r.stderr.strip().startswith(f"error: server http://127.0.0.1:{port}: Unavailable")


@pytest.mark.parametrize("run, prompts, steps, guidance, truncation, per_prompt, seed", [
    ("two_prompts_trunc", ["a red car", "teddy bear playing in the pool"], 10, 5.0, 0.86, 1, 1),
    ("images_per_prompt_2", ["a painting of a dog"], 8, 3.0, 0.9, 2, 2),
    ("no_cfg", ["a bowl of fresh fruit"], 12, 1.0, 1.0, 1, 3),
    ("full_100_steps", ["a landscape with a lake"], 100, 5.0, 0.86, 1, 4),
    ("exclamation_prompt", ["a dog!! running"], 5, 5.0, 1.0, 1, 7),
])
def test_more_diffusers_golden_runs(client, run, prompts, steps, guidance, truncation, per_prompt, seed):
    images = client.generate_images(prompts, num_inference_steps=steps, guidance_scale=guidance,
                                    truncation_rate=truncation, num_images_per_prompt=per_prompt, seed=seed)
    assert len(images) == len(prompts) * per_prompt
    for image in images:
        _assert_within_decoder_rounding(_golden(f"pipeline_{run}_{image.index}.png"), _rgb(image.data))
