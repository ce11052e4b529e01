"""``radiolens serve --ssl-keyfile/--ssl-certfile``: HTTPS on a real socket, with Strict-Transport-Security and the
other security headers; the two options go together."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time

import httpx
from tests.serve.conftest import SECRET, free_port
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.http.security import HSTS_MAX_AGE_S


def _self_signed(tmp_path):
    """A throw-away certificate for 127.0.0.1 (made with the ``cryptography`` library)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_serve_over_tls_sends_hsts(bundle_path, tmp_path):
    key_path, cert_path = _self_signed(tmp_path)
    state = tmp_path / "state"
    port = free_port()
    env = dict(os.environ, RADIOLENS_DEID_SECRET=SECRET)
    proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(bundle_path),
                             "--state-dir", str(state), "--port", str(port), "--log-level", "warning",
                             "--ssl-keyfile", str(key_path), "--ssl-certfile", str(cert_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2, verify=str(cert_path))
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.3)
        for path in ("/viewer/", "/docs", "/v1/me", "/readyz"):
            r = httpx.get(url + path, verify=str(cert_path), timeout=10)
            assert r.headers["strict-transport-security"] == f"max-age={HSTS_MAX_AGE_S}", path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        try:  # plain HTTP on the TLS port is not served
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert plain.status_code >= 400
        except httpx.TransportError:
            pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ssl_options_go_together(bundle_path, tmp_path):
    key_path, _ = _self_signed(tmp_path)
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "s"),
                                     "--ssl-keyfile", str(key_path)])
    assert r.exit_code == 2 and "--ssl-certfile" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "s"),
                                     "--ssl-keyfile", str(key_path), "--ssl-certfile", str(tmp_path / "nope.pem")])
    assert r.exit_code == 2 and "nope.pem" in r.output
