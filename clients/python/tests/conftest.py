"""Fixtures: a real VqDiffusion.Server process on loopback with the tiny test model.

The server is not built here: run `dotnet build src/VqDiffusion.Server` (or the solution) first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_ROOT = os.path.dirname(HERE)
REPO_ROOT = os.path.abspath(os.path.join(CLIENT_ROOT, "..", ".."))
sys.path.insert(0, CLIENT_ROOT)

from vqdiffusion_client import Client, VqDiffusionError  # noqa: E402

SERVER_DLL = os.path.join(REPO_ROOT, "src", "VqDiffusion.Server", "bin", "Debug", "net10.0", "VqDiffusion.Server.dll")
TINY_MODEL = os.path.join(REPO_ROOT, "models", "tiny-ithq")
GOLDEN_PNG = os.path.join(REPO_ROOT, "tests", "fixtures", "tiny-ithq", "golden", "png")
# The improved golden set (original VQ-Diffusion samplers); VQD_IMPROVED_GOLDEN selects another set built the same way.
IMPROVED_GOLDEN = os.environ.get("VQD_IMPROVED_GOLDEN") or os.path.join(REPO_ROOT, "tests", "fixtures", "improved-tiny", "golden")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The API key of the secure server (Auth:ApiKeys:tests): >= 16 printable ASCII characters.
API_KEY = "test-key-0123456789abcdef"


class ServerProcess:
    def __init__(self, address: str, process: subprocess.Popen, log_path: str) -> None:
        self.address = address
        self.process = process
        self.log_path = log_path
        # With TLS (secure_server): the https:// address, the certificate's file and PEM bytes.
        self.https_address: "str | None" = None
        self.ca_cert: "str | None" = None
        self.ca_pem: "bytes | None" = None

    def log_tail(self, chars: int = 4000) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-chars:]


def make_certificate(directory: str) -> "tuple[str, str]":
    """A self-signed certificate for 127.0.0.1/localhost (one day) in ``directory``: (cert.pem, key.pem)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing (Debian package openssl; .ci/run installs it)", pytrace=False)
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@contextlib.contextmanager
def _running_server(model_path: str, *, extra_args=(), tls_dir: "str | None" = None, api_key: "str | None" = None):
    """A server process with ``model_path`` on a free loopback port, until the block ends. With ``tls_dir`` it also
    listens on a second port over TLS, with a self-signed certificate made there; ``extra_args`` are more command-line
    configuration (``--Auth:ApiKeys:NAME=KEY``); ``api_key`` is the key its readiness probe sends."""
    if not os.path.isfile(SERVER_DLL):
        pytest.fail(
            f"{SERVER_DLL} is missing: build the server first (dotnet build src/VqDiffusion.Server, "
            "or the solution) before running the Python client tests.",
            pytrace=False,
        )
    port = _free_port()
    address = f"http://127.0.0.1:{port}"
    urls, tls_args, https_address, cert = address, [], None, None
    if tls_dir is not None:
        cert, key = make_certificate(tls_dir)
        https_address = f"https://127.0.0.1:{_free_port()}"
        urls = f"{address};{https_address}"
        tls_args = [f"--Kestrel:Certificates:Default:Path={cert}", f"--Kestrel:Certificates:Default:KeyPath={key}"]
    log = tempfile.NamedTemporaryFile(prefix="vqd-server-", suffix=".log", delete=False)
    process = subprocess.Popen(
        ["dotnet", SERVER_DLL, "--urls", urls, f"--Model:Path={model_path}", *tls_args, *extra_args],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    srv = ServerProcess(address, process, log.name)
    if cert is not None:
        srv.https_address, srv.ca_cert = https_address, cert
        with open(cert, "rb") as f:
            srv.ca_pem = f.read()
    try:
        deadline = time.monotonic() + 120
        last_error = None
        with Client(address, api_key=api_key) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the server exited with {process.returncode}:\n{srv.log_tail()}", pytrace=False)
                try:
                    client.model_info(timeout=2)
                    break
                except VqDiffusionError as e:  # connection refused / model loading
                    last_error = e
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not get ready in 120 s ({last_error}):\n{srv.log_tail()}", pytrace=False)
                time.sleep(0.2)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def server():
    with _running_server(TINY_MODEL) as srv:
        yield srv


@pytest.fixture(scope="session")
def secure_server(tmp_path_factory):
    """A server that wants API_KEY (Auth:ApiKeys:tests) on plaintext and on TLS (srv.https_address, srv.ca_cert)."""
    tls_dir = str(tmp_path_factory.mktemp("tls"))
    with _running_server(TINY_MODEL, extra_args=[f"--Auth:ApiKeys:tests={API_KEY}"], tls_dir=tls_dir,
                         api_key=API_KEY) as srv:
        yield srv


@pytest.fixture(scope="session")
def improved_server(server):
    """A server with the model of the improved golden set (the same process when it is the tiny model)."""
    model = improved_model_path()
    if os.path.realpath(model) == os.path.realpath(TINY_MODEL):
        yield server
        return
    with _running_server(model) as srv:
        yield srv


def improved_model_path() -> str:
    """The improved golden set's model: models/<name> when shipped, else the manifest's path."""
    with open(os.path.join(IMPROVED_GOLDEN, "manifest.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    parts = model.replace("\\", "/").rstrip("/").split("/")
    name = parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]
    for candidate in (os.path.join(REPO_ROOT, "models", name), os.path.join(REPO_ROOT, model), os.path.join(REPO_ROOT, "..", model)):
        if os.path.isfile(os.path.join(candidate, "model_index.json")):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"the improved golden set's model {model} is not in models/{name}")


@pytest.fixture()
def client(server):
    with Client(server.address) as c:
        yield c
