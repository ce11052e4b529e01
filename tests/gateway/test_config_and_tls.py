"""The gateway's configuration refuses what a PACS would refuse (AE titles), what cannot work (a destination
without an address, no allow-list), as one-line errors; DICOM over TLS with client certificates."""

from __future__ import annotations

import ssl

import pydicom
import pytest
from pynetdicom import AE
from tests.gateway.conftest import MODALITY_AE, config_for
from tests.serve.test_tls import _self_signed
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.gateway.config import GatewayConfig


@pytest.mark.parametrize("title", ["", "   ", "A" * 17, "BACK\\SLASH", "NON-ASCII-É"])
def test_bad_ae_titles_are_refused(title, tmp_path):
    with pytest.raises(ConfigError, match="AE title is 1 to 16"):
        GatewayConfig.load(None, ae_title=title)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"peers:\n  p: {{ae_title: '{title}'}}\n")
    with pytest.raises(ConfigError, match="AE title"):
        GatewayConfig.load(cfg)


def test_destination_needs_an_address_and_the_file_must_parse(tmp_path):
    with pytest.raises(ConfigError, match="destination.peer must name an entry of peers with host and port"):
        GatewayConfig.load(None, peers={"a": {"ae_title": "A"}}, destination={"kind": "peer", "peer": "a"})
    with pytest.raises(ConfigError, match="stow_url"):
        GatewayConfig.load(None, destination={"kind": "stow"})
    bad = tmp_path / "g.yaml"
    bad.write_text("peers: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read the gateway configuration g.yaml"):
        GatewayConfig.load(bad)


def test_cli_errors_are_one_line(tmp_path, bundle_path, monkeypatch):
    monkeypatch.setenv("RADIOLENS_DEID_SECRET", "test-deid-secret-not-for-production")
    cfg = tmp_path / "g.yaml"
    cfg.write_text("ae_title: WAY_TOO_LONG_FOR_DICOM\n")
    r = CliRunner().invoke(cli_app, ["gateway", "run", "--model", str(bundle_path), "--config", str(cfg),
                                     "--state-dir", str(tmp_path / "s")])
    assert r.exit_code != 0 and "AE title" in r.output and "Traceback" not in r.output
    cfg.write_text("ae_title: RADIOLENS\nport: 0\n")  # no peers: nobody could send
    r = CliRunner().invoke(cli_app, ["gateway", "run", "--model", str(bundle_path), "--config", str(cfg),
                                     "--state-dir", str(tmp_path / "s")])
    assert r.exit_code != 0 and "lists no peers" in r.output and "Traceback" not in r.output


def test_dicom_over_tls_requires_a_client_certificate(gateway_factory, service_factory, archive, chest_cr,
                                                      tmp_path):
    key, cert = _self_signed(tmp_path)  # its own CA: it signs the client certificate too
    config = config_for(archive, tls={"certfile": str(cert), "keyfile": str(key), "ca_file": str(cert)})
    gateway = gateway_factory(config, service_factory())
    ds = pydicom.dcmread(chest_cr)

    def store(ctx: ssl.SSLContext | None) -> list[int]:
        ae = AE(ae_title=MODALITY_AE)
        ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title="RADIOLENS",
                             tls_args=(ctx, "127.0.0.1") if ctx else None)
        if not assoc.is_established:
            return []
        try:
            return [int(assoc.send_c_store(ds).Status)]
        finally:
            assoc.release()

    client = ssl.create_default_context(cafile=str(cert))
    client.load_cert_chain(str(cert), str(key))
    assert store(client) == [0]
    archive.wait_for(2)
    no_cert = ssl.create_default_context(cafile=str(cert))
    assert store(no_cert) == []  # the server asks for a certificate and gets none
    assert store(None) == []  # plain DICOM on the TLS port
    assert store(client) == [0]  # still serving


def test_gateway_backend_follows_an_onnx_model(tmp_path, monkeypatch):
    """No --backend: an .onnx model runs on ONNX Runtime (as `radiolens serve` does), not refused as a torch one."""
    monkeypatch.setenv("RADIOLENS_DEID_SECRET", "test-deid-secret-not-for-production")
    from radiolens._cli.serve import _backend

    model = tmp_path / "model.onnx"
    assert _backend(None, None, model) == {"backend": None, "onnx_path": None}
    cfg = tmp_path / "g.yaml"
    cfg.write_text("ae_title: RADIOLENS\nport: 0\n")
    r = CliRunner().invoke(cli_app, ["gateway", "run", "--model", str(model), "--config", str(cfg),
                                     "--state-dir", str(tmp_path / "s")])
    assert r.exit_code != 0 and "ONNX export" not in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli_app, ["gateway", "run", "--model", str(model), "--backend", "torch",
                                     "--config", str(cfg), "--state-dir", str(tmp_path / "s")])
    assert r.exit_code != 0 and "is an ONNX export" in r.output
