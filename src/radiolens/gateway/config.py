"""The gateway's configuration (YAML file ``--config``, flags override a few fields): who may send, what is
scored, where results go and how hard to try."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: 16 chars, default repertoire, no backslash


def check_ae_title(value: str) -> str:
    v = str(value).strip()
    if not v or not _AE.match(v):
        raise ValueError("an AE title is 1 to 16 printable ASCII characters without a backslash")
    return v


class Peer(BaseModel):
    """A DICOM node radiolens talks to: a sender it accepts and, with host and port, where results can go."""

    ae_title: str
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @property
    def addressable(self) -> bool:
        return bool(self.host) and self.port is not None


class Tls(BaseModel):
    """TLS on the DICOM port (PS3.15 B.1, the secure transport connection profile) and for sending back."""

    certfile: Path
    keyfile: Path
    #: CA bundle that client certificates must chain to; with it, a sender without a valid certificate is refused.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _files(self) -> Tls:
        for name in ("certfile", "keyfile", "ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"tls.{name}: file not found: {Path(path).name}")
        return self


class Routing(BaseModel):
    """What is scored. An instance outside these rules is acknowledged, not scored, and its skip audited with
    a PHI-free reason (the rule it failed). Empty ``body_parts`` / ``views`` mean "any"; a missing attribute
    passes when ``allow_missing`` (many CR/DX headers leave them empty)."""

    modalities: list[str] = Field(default_factory=lambda: ["CR", "DX"])
    body_parts: list[str] = Field(default_factory=lambda: ["CHEST"])
    views: list[str] = Field(default_factory=lambda: ["PA", "AP"])
    allow_missing: bool = True

    @field_validator("modalities", "body_parts", "views")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [str(x).strip().upper() for x in v]


class Destination(BaseModel):
    """Where results go: back to the calling AE (its address from ``peers``), a named peer, a STOW-RS URL, or
    nowhere (scored and audited only)."""

    kind: Literal["calling_ae", "peer", "stow", "none"] = "calling_ae"
    peer: str | None = None  # a key of ``peers`` for kind "peer"
    stow_url: str | None = None  # DICOMweb base URL (``.../dicom-web``) for kind "stow"
    #: For STOW: HTTP basic credentials as "user:password" read from this environment variable, if set.
    stow_credentials_env: str | None = None
    #: C-STORE to the destination over TLS, with the gateway's certificate and ``tls.ca_file`` to check it.
    tls: bool = False


class SendPolicy(BaseModel):
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_s: float = Field(default=2.0, gt=0)  # first wait; doubles each attempt
    backoff_max_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)  # association / request timeout


class GatewayConfig(BaseModel):
    ae_title: str = "RADIOLENS"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)  # 0: any free port (tests)
    #: Calling AE titles allowed to send, by name. Associations from any other AE title are rejected.
    peers: dict[str, Peer] = Field(default_factory=dict)
    tls: Tls | None = None
    routing: Routing = Field(default_factory=Routing)
    destination: Destination = Field(default_factory=Destination)
    send: SendPolicy = Field(default_factory=SendPolicy)
    heatmap_capture: bool = True  # a Secondary Capture with the heatmap next to the SR
    max_associations: int = Field(default=8, ge=1, le=64)
    max_pdu: int = Field(default=0, ge=0)  # 0: unlimited
    network_timeout_s: float = Field(default=60.0, gt=0)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @model_validator(mode="after")
    def _destination(self) -> GatewayConfig:
        d = self.destination
        if d.kind == "peer":
            if not d.peer or d.peer not in self.peers or not self.peers[d.peer].addressable:
                raise ValueError("destination.peer must name an entry of peers with host and port")
        if d.kind == "stow" and not d.stow_url:
            raise ValueError("destination kind 'stow' needs stow_url")
        if d.tls and self.tls is None:
            raise ValueError("destination.tls needs the tls section (the certificate radiolens presents)")
        return self

    def peer_for(self, calling_ae: str) -> Peer | None:
        for peer in self.peers.values():
            if peer.ae_title == calling_ae.strip():
                return peer
        return None

    @classmethod
    def load(cls, path: Path | None, **overrides) -> GatewayConfig:
        import yaml

        from radiolens.errors import ConfigError

        data: dict = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read the gateway configuration {Path(path).name} "
                                  f"({type(exc).__name__})") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"gateway configuration: {exc}") from None
