"""HTTPS and gRPC over TLS, with and without client certificates, with certificates made here
(the `cryptography` package): tritonclient and ferry's client over both protocols."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import ferry
from ferry.client import Client, ClientTls
from serving_helpers import W, free_port, linear_model

x509 = pytest.importorskip("cryptography.x509")
tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_key, issuer_name=None, ca: bool = False, server: bool = False):
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization

    root = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("ferry test CA", ca_key, ca_key, ca=True)
    files = {}
    for name, server in (("server", True), ("client", False)):
        key = _key()
        cert = _cert(f"ferry test {name}", key, ca_key, ca.subject, server=server)
        files[f"{name}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}.key"] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    files["ca.crt"] = ca.public_bytes(serialization.Encoding.PEM)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


class TlsServer:
    def __init__(self, repo: Path, pki: dict[str, Path], mtls: bool):
        self.http_port, self.grpc_port = free_port(), free_port()
        args = ["--tls-cert", pki["server.crt"], "--tls-key", pki["server.key"]]
        if mtls:
            args += ["--tls-client-ca", pki["ca.crt"]]
        cmd = [sys.executable, "-m", "ferry", "serve", str(repo), "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), *map(str, args)]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        if mtls:
            context.load_cert_chain(str(pki["client.crt"]), str(pki["client.key"]))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.http_port}/v2/health/live", context=context):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(self.process.stderr.read().decode()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tls-repo")
    ferry.save(linear_model(), root / "linear" / "1", name="linear", version="1")
    return root


@pytest.fixture(scope="module", params=[False, True], ids=["tls", "mtls"])
def server(request, repo, pki):
    s = TlsServer(repo, pki, mtls=request.param)
    s.mtls = request.param
    yield s
    s.stop()


X = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)


def test_tritonclient_over_https(server, pki):
    options = {"ca_certs": str(pki["ca.crt"])}
    if server.mtls:
        options |= {"certfile": str(pki["client.crt"]), "keyfile": str(pki["client.key"])}
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{server.http_port}", ssl=True, ssl_options=options)
    inp = tritonhttp.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(X)
    np.testing.assert_allclose(client.infer("linear", [inp]).as_numpy("y"), X @ W, rtol=1e-5)


def test_tritonclient_over_grpc_tls(server, pki):
    extra = {}
    if server.mtls:
        extra = {"private_key": str(pki["client.key"]), "certificate_chain": str(pki["client.crt"])}
    client = tritongrpc.InferenceServerClient(
        f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca.crt"]), **extra
    )
    inp = tritongrpc.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(X)
    np.testing.assert_allclose(client.infer("linear", [inp]).as_numpy("y"), X @ W, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
def test_ferry_client_over_tls(server, pki, scheme):
    tls = ClientTls(ca=pki["ca.crt"], cert=pki["client.crt"] if server.mtls else None,
                    key=pki["client.key"] if server.mtls else None)  # fmt: skip
    port = server.http_port if scheme == "https" else server.grpc_port
    with Client(f"{scheme}://127.0.0.1:{port}", tls=tls) as client:
        np.testing.assert_allclose(client.infer("linear", {"x": X})["y"], X @ W, rtol=1e-5)


def test_plain_clients_are_refused(server, pki):
    with pytest.raises(Exception):  # noqa: B017  (any failure to talk plain HTTP to a TLS port will do)
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/health/live", timeout=5).read()
    if not server.mtls:
        return
    # With mTLS on, a client that trusts the server but shows no certificate is refused, on both protocols.
    context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"https://127.0.0.1:{server.http_port}/v2/health/live", context=context, timeout=5)
    client = tritongrpc.InferenceServerClient(
        f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca.crt"])
    )
    with pytest.raises(Exception, match="(?i)unavailable|handshake|ssl|certificate|failed"):
        client.is_server_live(client_timeout=5)
