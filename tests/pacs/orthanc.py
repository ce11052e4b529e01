"""A real Orthanc PACS as a test peer for radiolens's DICOM networking (C-ECHO, C-STORE in both directions, REST).

Why a real PACS rather than a second pynetdicom script: Orthanc is an independent DICOM implementation (DCMTK
underneath), so association negotiation, transfer syntaxes and AE title checks are exercised against code that
radiolens did not write. The class only wraps Debian's ``/usr/sbin/Orthanc`` binary: it writes a throw-away
configuration under a folder the caller owns, starts the server on free ports and talks to its REST API with httpx.
Pure helpers, no pytest fixtures here (see ``tests/pacs/conftest.py``).

Network exposure: Orthanc 1.10 has no option to choose the address it listens on; both its HTTP server and its
DICOM server bind every interface. The configuration therefore limits what a remote host could do: HTTP refuses
non-loopback clients (``RemoteAccessAllowed`` false) and requires a generated password anyway, and the DICOM side
accepts C-STORE only from the AE titles registered in ``DicomModalities`` unless the caller opts in.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
#: Debian's ``orthanc-dicomweb`` package (the DICOMweb plugin), for STOW-RS into Orthanc.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = "Debian's orthanc package is required: `bash scripts/install-system-deps.sh` (apt-get install orthanc)"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nothing listens on now. Probed on every interface because that is where Orthanc will bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc server with its own storage, ports, AE title and REST credentials, all under ``workdir``.

    ``modalities`` maps an Orthanc-side name to ``(AET, host, port)``: each entry is both a destination that
    ``send_to_modality`` can C-STORE to and a peer allowed to C-ECHO / C-STORE into this Orthanc.
    """

    def __init__(
        self,
        workdir: Path | str,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        always_allow_echo: bool = True,
        always_allow_store: bool = False,
        check_called_aet: bool = True,
        dicomweb: bool = False,
        binary: Path | str = ORTHANC_BINARY,
    ) -> None:
        self.workdir = Path(workdir)
        self._aet = aet
        self._modalities = dict(modalities or {})
        self._always_allow_echo = always_allow_echo
        self._always_allow_store = always_allow_store
        self._check_called_aet = check_called_aet
        self._binary = Path(binary)
        self._dicomweb = dicomweb  # load Debian's orthanc-dicomweb plugin: STOW-RS / QIDO-RS under /dicom-web/
        self._http_port = free_port()
        self._dicom_port = free_port()
        self._user = "radiolens-test"
        self._password = secrets.token_urlsafe(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self.config_path = self.workdir / "orthanc.json"

    # ------------------------------------------------------------------ properties
    @property
    def aet(self) -> str:
        return self._aet

    @property
    def dicom_port(self) -> int:
        return self._dicom_port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def auth(self) -> tuple[str, str]:
        """(user, password) of the REST API's basic authentication."""
        return (self._user, self._password)

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """The JSON configuration this server runs with (everything not set here keeps Orthanc's default)."""
        storage = self.workdir / "storage"
        return {
            "Name": f"radiolens-test-{self._aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            # Debian's default configuration loads every plugin of /usr/share/orthanc/plugins/ (web viewer,
            # DICOMweb, ...): the test peer is the core server only, so its behaviour does not depend on them.
            "Plugins": [str(DICOMWEB_PLUGIN)] if self._dicomweb else [],
            "DicomWeb": {"Enable": self._dicomweb, "Root": "/dicom-web/"},
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self._http_port,
            # No bind-address option exists in 1.10 (see the module docstring): loopback-only is enforced here.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self._user: self._password},
            "HttpDescribeErrors": True,
            "HttpThreadsCount": 8,
            "DicomServerEnabled": True,
            "DicomAet": self._aet,
            "DicomPort": self._dicom_port,
            # A strict PACS refuses associations addressed to another AE title: a sender configured with the
            # wrong called AET must fail in the tests as it would at a site.
            "DicomCheckCalledAet": self._check_called_aet,
            # C-ECHO from anyone: a verification is harmless and tests echo from ad-hoc SCUs. C-STORE only from
            # registered modalities (DicomModalities), as a PACS would be configured, unless the test opts in.
            "DicomAlwaysAllowEcho": self._always_allow_echo,
            "DicomAlwaysAllowStore": self._always_allow_store,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            # Peers are identified by AE title only: everything runs on loopback, where the host adds nothing.
            "DicomCheckModalityHost": False,
            "DicomModalities": {
                name: {
                    "AET": aet, "Host": host, "Port": int(port),
                    "AllowEcho": True, "AllowStore": True,
                    "AllowFind": False, "AllowFindWorklist": False, "AllowMove": False, "AllowGet": False,
                }
                for name, (aet, host, port) in self._modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            # Orthanc keeps an outgoing association open 5 s by default for reuse; closing it at once lets a
            # receiver under test see the release right after each send.
            "DicomAssociationCloseDelay": 0,
            # Series/studies become "stable" after this many seconds without a new instance (Lua/jobs hooks);
            # small so tests that wait on stability do not wait a minute.
            "StableAge": 1,
            # A re-sent instance with the same SOP Instance UID replaces the stored one, as in most PACS (Orthanc's
            # default keeps the first copy and silently ignores the new one, which would hide a corrected resend).
            "OverwriteInstances": True,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpTimeout": 60,
        }

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        return self.config_path

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> Orthanc:
        """Launch Orthanc and wait until ``GET /system`` answers; raise RuntimeError with the log tail if not."""
        if not self._binary.is_file():
            raise FileNotFoundError(f"{self._binary} is missing. {INSTALL_HINT}")
        if self._proc is not None:
            raise RuntimeError("this Orthanc is already started")
        self.write_config()
        self._proc = subprocess.Popen(
            [str(self._binary), "--no-jobs", f"--logfile={self.log_path}", str(self.config_path)],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "orthanc.stderr", "wb"),  # noqa: SIM115 - handed to the child process
        )
        self._client = httpx.Client(base_url=self.url, auth=self.auth, timeout=30.0)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"Orthanc exited with status {code} while starting\n{self.log_tail()}")
            try:
                if self._client.get("/system", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Orthanc did not answer GET /system within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Orthanc flushes its index and exits), then SIGKILL if it is still running after ``timeout``."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.log_path, self.workdir / "orthanc.stderr"):
            if path.is_file():
                parts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(parts) or "(Orthanc wrote no log)"

    # ------------------------------------------------------------------ REST
    @property
    def client(self) -> httpx.Client:
        """The authenticated REST client (only while started)."""
        if self._client is None:
            raise RuntimeError("Orthanc is not started")
        return self._client

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise AssertionError(
                f"Orthanc {response.request.method} {response.request.url.path} answered "
                f"{response.status_code}: {response.text}")
        return response

    def upload(self, data: bytes) -> str:
        """Store one DICOM file (POST /instances); return its Orthanc instance id."""
        body = self._check(self.client.post("/instances", content=data,
                                            headers={"Content-Type": "application/dicom"})).json()
        return body["ID"]

    def studies(self) -> list[str]:
        """StudyInstanceUIDs of every study stored."""
        expanded = self._check(self.client.get("/studies", params={"expand": ""})).json()
        return [s["MainDicomTags"]["StudyInstanceUID"] for s in expanded]

    def find_instances(self, **tag_filters: str) -> list[dict[str, Any]]:
        """Instances matching DICOM keyword filters (``/tools/find``, Orthanc's C-FIND-like wildcards allowed).

        Each dict holds the instance's main DICOM tags (SOPInstanceUID, InstanceNumber, ...), ``ID`` (Orthanc id),
        ``ParentSeries`` and ``SOPClassUID`` (Orthanc keeps it as instance metadata, not as a main tag).
        """
        found = self._check(self.client.post(
            "/tools/find", json={"Level": "Instance", "Query": tag_filters, "Expand": True})).json()
        out = []
        for item in found:
            row = dict(item.get("MainDicomTags", {}))
            row["ID"] = item["ID"]
            row["ParentSeries"] = item.get("ParentSeries")
            meta = self.client.get(f"/instances/{item['ID']}/metadata/SopClassUid")
            row["SOPClassUID"] = meta.text.strip() if meta.status_code == 200 else None
            out.append(row)
        return out

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study with this StudyInstanceUID (see :meth:`find_instances`)."""
        return self.find_instances(StudyInstanceUID=study_uid)

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """All tags of a stored instance by keyword (``/instances/{id}/simplified-tags``)."""
        return self._check(self.client.get(f"/instances/{orthanc_id}/simplified-tags")).json()

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, byte for byte as Orthanc keeps it."""
        return self._check(self.client.get(f"/instances/{orthanc_id}/file")).content

    def set_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register (or replace) a modality at run time, for peers whose port is known only after start."""
        self._modalities[name] = (aet, host, port)
        self._check(self.client.put(f"/modalities/{name}", json=self.config()["DicomModalities"][name]))

    def send_to_modality(self, name: str, orthanc_ids: list[str], timeout: float = 60.0) -> dict[str, Any]:
        """C-STORE the given resources to a registered modality and wait for the job; AssertionError on failure."""
        response = self.client.post(
            f"/modalities/{name}/store",
            json={"Resources": list(orthanc_ids), "Synchronous": True, "Timeout": int(timeout)},
            timeout=timeout + 10)
        body = self._check(response).json()
        if body.get("FailedInstancesCount", 0):
            raise AssertionError(f"Orthanc failed to send to {name}: {response.text}")
        return body

    def modality_echo(self, name: str, timeout: float = 10.0) -> bool:
        """C-ECHO from Orthanc to a registered modality."""
        response = self.client.post(f"/modalities/{name}/echo", json={"Timeout": int(timeout)},
                                    timeout=timeout + 10)
        return response.status_code == 200

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
        """Poll ``predicate`` until it returns something truthy and return that; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout:.0f} s (last value: {value!r})")
            time.sleep(interval)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Orthanc(aet={self._aet!r}, http={self._http_port}, dicom={self._dicom_port}, {state})"


__all__ = ["DICOMWEB_PLUGIN", "INSTALL_HINT", "ORTHANC_BINARY", "Orthanc", "free_port"]
