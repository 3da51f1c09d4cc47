"""API keys and TLS: the client and the example against a server started with Auth:ApiKeys and an https:// endpoint
(a self-signed certificate made in a temporary folder, see conftest.secure_server)."""

from __future__ import annotations

import io
import os
import subprocess

import grpc
import pytest
from PIL import Image as PilImage

from conftest import API_KEY, CLIENT_ROOT, GOLDEN_PNG, REPO_ROOT
from vqdiffusion_client import Client, UnauthenticatedError, UnavailableError, VqDiffusionError

EXAMPLE = os.path.join(CLIENT_ROOT, "examples", "generate.py")
NO_CREDENTIALS = "no credentials: send the metadata 'authorization: Bearer <API key or token>'"
NOT_VALID = "the API key is not valid"
# The golden request (diffusers' pipeline_single_cfg_0.png).
REQUEST = dict(num_inference_steps=10, guidance_scale=5.0, truncation_rate=1.0, seed=0)
EXAMPLE_REQUEST = ["--prompt", "a photo of a cat", "--steps", "10", "--guidance-scale", "5", "--truncation-rate", "1.0",
                   "--seed", "0", "--quiet"]


def _rgb(png: bytes) -> bytes:
    with PilImage.open(io.BytesIO(png)) as img:
        return img.convert("RGB").tobytes()


def _assert_matches_golden(png: bytes) -> None:
    """The rule of test_client: |diff| <= 1 everywhere, on < 0.5% of the values."""
    with open(os.path.join(GOLDEN_PNG, "pipeline_single_cfg_0.png"), "rb") as f:
        expected = _rgb(f.read())
    actual = _rgb(png)
    assert len(expected) == len(actual)
    diffs = [abs(a - b) for a, b in zip(expected, actual) if a != b]
    assert not diffs or max(diffs) <= 1, f"max |diff| {max(diffs)}"
    assert len(diffs) < 0.005 * len(expected), f"{len(diffs)} of {len(expected)} values differ"


@pytest.fixture(scope="module")
def plain_image(server):
    """The golden request's PNG from the server without authentication or TLS."""
    with Client(server.address) as c:
        return c.generate_images("a photo of a cat", **REQUEST)[0].data


def test_key_and_ca_over_tls_give_the_plain_servers_image(secure_server, plain_image):
    with Client(secure_server.https_address, api_key=API_KEY, root_certificates=secure_server.ca_pem) as c:
        assert c.model_info().model_id == "tiny-ithq"
        images = c.generate_images("a photo of a cat", **REQUEST)
    assert len(images) == 1
    assert images[0].data == plain_image
    _assert_matches_golden(images[0].data)


def test_key_over_plaintext(secure_server, plain_image):
    with Client(secure_server.address, api_key=API_KEY) as c:
        assert c.model_info().model_id == "tiny-ithq"
        assert c.generate_images("a photo of a cat", **REQUEST)[0].data == plain_image


@pytest.mark.parametrize("tls", [True, False])
def test_no_key_is_unauthenticated(secure_server, tls):
    kwargs = dict(root_certificates=secure_server.ca_pem) if tls else {}
    with Client(secure_server.https_address if tls else secure_server.address, **kwargs) as c:
        with pytest.raises(UnauthenticatedError) as e:
            c.model_info(timeout=30)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert e.value.message == NO_CREDENTIALS
        with pytest.raises(UnauthenticatedError) as e:
            c.generate_images("a photo of a cat", num_inference_steps=1, timeout=30)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert e.value.message == NO_CREDENTIALS


def test_wrong_key_is_unauthenticated(secure_server):
    with Client(secure_server.https_address, api_key="not-the-key-0123456789",
                root_certificates=secure_server.ca_pem) as c:
        for call in (lambda: c.model_info(timeout=30),
                     lambda: c.generate_images("a photo of a cat", num_inference_steps=1, timeout=30)):
            with pytest.raises(VqDiffusionError) as e:
                call()
            assert isinstance(e.value, UnauthenticatedError)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert e.value.message == NOT_VALID
            assert "not-the-key" not in str(e.value)


def test_without_the_ca_the_handshake_fails(secure_server):
    # The system's roots do not hold the self-signed certificate: no connection, UNAVAILABLE.
    with Client(secure_server.https_address, api_key=API_KEY) as c:
        with pytest.raises(UnavailableError) as e:
            c.model_info(timeout=30)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_health_stays_open_without_a_key(secure_server):
    # grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""): status SERVING = field 1, value 1.
    with grpc.secure_channel(secure_server.https_address[len("https://"):],
                             grpc.ssl_channel_credentials(secure_server.ca_pem)) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert check(b"", timeout=30) == b"\x08\x01"


@pytest.mark.parametrize("key, message", [
    ("", "api_key must not be empty"),
    ("two words-0123456789", "api_key must be printable ASCII without spaces"),
    ("tab\t0123456789abcdef", "api_key must be printable ASCII without spaces"),
    ("clé-0123456789abcdef", "api_key must be printable ASCII without spaces"),
    ("del\x7f0123456789abcdef", "api_key must be printable ASCII without spaces"),
])
def test_client_rejects_a_malformed_key(key, message):
    with pytest.raises(ValueError) as e:
        Client("http://127.0.0.1:1", api_key=key)
    assert str(e.value) == message


def test_root_certificates_need_https():
    with pytest.raises(ValueError, match="root_certificates need an https:// target"):
        Client("http://127.0.0.1:1", root_certificates=b"-----BEGIN CERTIFICATE-----")


def _run_example(*args, env=None, cwd=REPO_ROOT):
    base = {k: v for k, v in os.environ.items() if k not in ("VQD_API_KEY", "VQD_CA_CERT")}
    return subprocess.run(["/usr/bin/python3", EXAMPLE, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**base, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})


def _error_line(r) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_example_with_key_and_ca_writes_the_image(secure_server, plain_image, tmp_path):
    out = tmp_path / "out"
    r = _run_example("--server", secure_server.https_address, "--api-key", API_KEY, "--ca-cert", secure_server.ca_cert,
                     *EXAMPLE_REQUEST, "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert sorted(os.listdir(out)) == ["000.png"]
    assert (out / "000.png").read_bytes() == plain_image


def test_example_takes_key_and_ca_from_the_environment(secure_server, plain_image, tmp_path):
    out = tmp_path / "out"
    r = _run_example("--server", secure_server.https_address, *EXAMPLE_REQUEST, "--output", str(out),
                     env={"VQD_API_KEY": API_KEY, "VQD_CA_CERT": secure_server.ca_cert})
    assert r.returncode == 0, r.stderr
    assert (out / "000.png").read_bytes() == plain_image

    # The flag wins over the environment.
    r = _run_example("--server", secure_server.https_address, "--api-key", "not-the-key-0123456789",
                     *EXAMPLE_REQUEST, "--output", str(tmp_path / "o2"),
                     env={"VQD_API_KEY": API_KEY, "VQD_CA_CERT": secure_server.ca_cert})
    assert r.returncode == 1
    assert _error_line(r) == f"error: server {secure_server.https_address}: Unauthenticated: {NOT_VALID}"


@pytest.mark.parametrize("env_key", [None, ""])
def test_example_without_a_key_exits_1_unauthenticated(secure_server, tmp_path, env_key):
    # An empty VQD_API_KEY is no key.
    env = {"VQD_CA_CERT": secure_server.ca_cert, **({} if env_key is None else {"VQD_API_KEY": env_key})}
    r = _run_example("--server", secure_server.https_address, *EXAMPLE_REQUEST, "--output", str(tmp_path / "o"), env=env)
    assert r.returncode == 1
    assert _error_line(r) == f"error: server {secure_server.https_address}: Unauthenticated: {NO_CREDENTIALS}"
    assert not (tmp_path / "o").exists()


def test_example_wrong_key_exits_1_without_echoing_it(secure_server, tmp_path):
    r = _run_example("--server", secure_server.https_address, "--api-key", "not-the-key-0123456789",
                     "--ca-cert", secure_server.ca_cert, *EXAMPLE_REQUEST, "--output", str(tmp_path / "o"))
    assert r.returncode == 1
    assert _error_line(r) == f"error: server {secure_server.https_address}: Unauthenticated: {NOT_VALID}"


def test_example_without_the_ca_exits_1_unavailable(secure_server, tmp_path):
    r = _run_example("--server", secure_server.https_address, "--api-key", API_KEY, *EXAMPLE_REQUEST,
                     "--output", str(tmp_path / "o"))
    assert r.returncode == 1
    assert _error_line(r).startswith(f"error: server {secure_server.https_address}: Unavailable")


@pytest.mark.parametrize("flags, env, line", [
    (["--api-key="], {}, "error: --api-key must not be empty."),
    (["--api-key", ""], {}, "error: --api-key must not be empty."),
    (["--api-key", "two words-0123456789"], {}, "error: --api-key must be printable ASCII without spaces."),
    (["--api-key", "tab\t0123456789abcdef"], {}, "error: --api-key must be printable ASCII without spaces."),
    (["--api-key", "clé-0123456789abcdef"], {}, "error: --api-key must be printable ASCII without spaces."),
    ([], {"VQD_API_KEY": "two words-0123456789"}, "error: VQD_API_KEY must be printable ASCII without spaces."),
    (["--api-key"], {}, "error: --api-key needs a value."),
    (["--ca-cert"], {}, "error: --ca-cert needs a value."),
    (["--ca-cert", "{dir}/cert.pem"], {}, "error: --ca-cert needs an https:// --server."),
    ([], {"VQD_CA_CERT": "{dir}/cert.pem"}, "error: VQD_CA_CERT needs an https:// --server."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/missing.pem"], {},
     "error: --ca-cert {dir}/missing.pem: Could not find file '{dir}/missing.pem'."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "missing.pem"], {},
     "error: --ca-cert missing.pem: Could not find file '{dir}/missing.pem'."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/nowhere/cert.pem"], {},
     "error: --ca-cert {dir}/nowhere/cert.pem: Could not find a part of the path '{dir}/nowhere/cert.pem'."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}"], {},
     "error: --ca-cert {dir}: Access to the path '{dir}' is denied."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/text.txt"], {},
     "error: --ca-cert {dir}/text.txt: no PEM certificate (-----BEGIN CERTIFICATE-----)."),
    (["--server", "https://127.0.0.1:1"], {"VQD_CA_CERT": "{dir}/text.txt"},
     "error: VQD_CA_CERT {dir}/text.txt: no PEM certificate (-----BEGIN CERTIFICATE-----)."),
    (["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/cert.pem"], {},
     "error: --ca-cert {dir}/cert.pem: not a valid PEM certificate."),
    # The API key of the environment is checked before the CA.
    (["--ca-cert", "{dir}/cert.pem"], {"VQD_API_KEY": "two words-0123456789"},
     "error: VQD_API_KEY must be printable ASCII without spaces."),
    # Without --server (checked right after the flags, as vqd does).
    (["--server=", "--api-key", API_KEY], {}, "error: --server must be an http:// or https:// URL (http://host:port), got ''."),
    # The --server URL is checked first.
    (["--server", "127.0.0.1:1", "--ca-cert", "{dir}/cert.pem"], {},
     "error: --server must be an http:// or https:// URL (http://host:port), got '127.0.0.1:1'."),
])
def test_example_flag_errors_exit_2(tmp_path, flags, env, line):
    # No server is needed: these are found before any call (port 1 on loopback would refuse it).
    (tmp_path / "text.txt").write_text("not a certificate")
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    expand = lambda s: s.replace("{dir}", str(tmp_path))  # noqa: E731
    args = ["--server", "http://127.0.0.1:1", "--prompt", "a cat", "--output", str(tmp_path / "out")]
    args += [expand(f) for f in flags]
    r = _run_example(*args, env={k: expand(v) for k, v in env.items()}, cwd=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert _error_line(r) == expand(line)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--api-key", "--ca-cert"])
def test_example_remote_flags_need_a_server(tmp_path, flag):
    r = _run_example("--prompt", "a cat", flag, "x" * 20, "--api-key", API_KEY, "--output", str(tmp_path / "out"))
    assert r.returncode == 2
    assert _error_line(r) == f"error: {flag} needs --server (it is for reaching a running server)."


def test_example_usage_lists_the_flags():
    r = _run_example("--help")
    assert r.returncode == 0
    assert "[--quality Q] [--api-key KEY] [--ca-cert FILE]" in r.stdout
