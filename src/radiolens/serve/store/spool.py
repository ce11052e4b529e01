"""The DICOM spool: a durable, encrypted on-disk queue between receiving an instance and delivering its results.

Why on disk, and why here: a DICOM sender (a modality, the PACS, a DICOMweb client) forgets an instance once it
is acknowledged, so the receivers (the C-STORE SCP in :mod:`radiolens.gateway` and the STOW-RS route of the
service) acknowledge only after the instance is in this spool (written, fsync'ed, renamed into place); a crash
or restart loses nothing that was acknowledged. Results wait in the outbox the same way until the destination
has them.

The spool is the one place that holds original data sets (the results must go back to the archive under the
ORIGINAL UIDs and patient module), so it is transient and sealed: every item is encrypted with AES-GCM under a
key derived from the de-identification secret (HKDF), its id bound in as associated data, in a 0700 folder, and
deleted as soon as it is done. Item ids are a time stamp and random hex: no identifier of the instance appears
in a file name. The audit database and the artefact store never see these items.

Layout (``state_dir/dicom-spool``): ``inbox/`` (received, waiting to be scored), ``work/`` (claimed by the
processor; moved back to the inbox at start-up, since a crash left them half done), ``outbox/`` (results to
send, with their attempt count and next attempt time), ``dead-letter/`` (results that could not be delivered
after every attempt, and items that cannot be opened), ``tmp/`` (writes in progress).

No library does this: queue libraries (persist-queue, diskcache) store plaintext in SQLite; a spool item must
be one encrypted file that appears atomically, which is a few lines over ``os.replace``.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radiolens.errors import RadiolensError
from radiolens.serve.store.state import private_dir

INBOX, WORK, OUTBOX, DEAD, TMP = "inbox", "work", "outbox", "dead-letter", "tmp"
#: The spool's folder inside the service's state folder (shared by the gateway and the STOW-RS route).
SPOOL_SUBDIR = "dicom-spool"
_SUFFIX = ".item"
_NONCE = 12
_HEADER = struct.Struct(">I")  # length of the JSON header inside the plaintext


class SpoolError(RadiolensError):
    """A spool item cannot be written or opened (disk full, a different secret, a damaged file)."""


@dataclass
class Item:
    """One spooled unit: named parts (the instance, or the result objects) and a small JSON header."""

    id: str
    parts: dict[str, bytes]
    meta: dict[str, Any] = field(default_factory=dict)


def _key(secret: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"radiolens-spool",
                info=b"radiolens dicom spool v1").derive(secret.encode("utf-8"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_id() -> str:
    """Sortable by arrival (nanosecond clock), unique (random tail), and free of any DICOM identifier."""
    return f"{time.time_ns():020d}-{secrets.token_hex(8)}"


class Spool:
    def __init__(self, root: Path, secret: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.root = private_dir(Path(root))
        for sub in (INBOX, WORK, OUTBOX, DEAD, TMP):
            private_dir(self.root / sub)
        self._aead = AESGCM(_key(secret))
        self._lock = threading.Lock()  # claim() is atomic per process; os.replace makes it atomic across them

    # ------------------------------------------------------------------ sealing
    def _seal(self, item: Item) -> bytes:
        names = list(item.parts)
        header = json.dumps({"meta": item.meta, "parts": [[n, len(item.parts[n])] for n in names]}).encode()
        plain = _HEADER.pack(len(header)) + header + b"".join(item.parts[n] for n in names)
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, item.id.encode())

    def _open(self, item_id: str, blob: bytes) -> Item:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], item_id.encode())
            (n,) = _HEADER.unpack_from(plain)
            header = json.loads(plain[_HEADER.size:_HEADER.size + n])
        except (InvalidTag, ValueError, struct.error) as exc:
            raise SpoolError(f"spool item {item_id} cannot be opened ({type(exc).__name__}): damaged, or sealed "
                             "under another de-identification secret") from None
        parts, pos = {}, _HEADER.size + n
        for name, length in header["parts"]:
            parts[name] = plain[pos:pos + length]
            pos += length
        return Item(item_id, parts, header["meta"])

    def _path(self, queue: str, item_id: str) -> Path:
        return self.root / queue / f"{item_id}{_SUFFIX}"

    def _write(self, queue: str, item: Item) -> None:
        """Durably: a temporary file, fsync, rename into the queue, fsync the folder. Raises SpoolError."""
        tmp = self.root / TMP / f"{item.id}.{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self._seal(item))
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, self._path(queue, item.id))
            _fsync_dir(self.root / queue)
        except OSError as exc:  # no str(exc): it names paths; the errno name is enough to act on
            raise SpoolError(f"cannot write to the DICOM spool ({type(exc).__name__})") from None

    def _ids(self, queue: str) -> list[str]:
        return sorted(p.name[:-len(_SUFFIX)] for p in (self.root / queue).iterdir() if p.name.endswith(_SUFFIX))

    def read(self, queue: str, item_id: str) -> Item:
        return self._open(item_id, self._path(queue, item_id).read_bytes())

    def count(self, queue: str) -> int:
        return len(self._ids(queue))

    # ------------------------------------------------------------------ inbox
    def put(self, data: bytes, meta: dict[str, Any]) -> str:
        """Queue one received instance; returns its id once it is on disk (acknowledge only after this)."""
        item = Item(new_id(), {"instance": data}, dict(meta))
        self._write(INBOX, item)
        return item.id

    def recover(self) -> int:
        """Move items a crash left claimed back to the inbox (they are scored again); returns how many."""
        moved = 0
        for item_id in self._ids(WORK):
            os.replace(self._path(WORK, item_id), self._path(INBOX, item_id))
            moved += 1
        for p in (self.root / TMP).iterdir():  # half-written, never acknowledged
            p.unlink(missing_ok=True)
        return moved

    def claim(self) -> Item | None:
        """The oldest waiting instance, moved to ``work/``; None when the inbox is empty. An item that cannot
        be opened goes to the dead-letter folder (SpoolError raised, naming only its id)."""
        with self._lock:
            for item_id in self._ids(INBOX):
                try:
                    os.replace(self._path(INBOX, item_id), self._path(WORK, item_id))
                except FileNotFoundError:  # another process took it
                    continue
                try:
                    return self.read(WORK, item_id)
                except SpoolError:
                    os.replace(self._path(WORK, item_id), self._path(DEAD, item_id))
                    raise
        return None

    def finish(self, item_id: str) -> None:
        """The claimed instance is done (scored, or skipped): its original data set is deleted."""
        self._path(WORK, item_id).unlink(missing_ok=True)

    # ------------------------------------------------------------------ outbox
    def post(self, item_id: str, parts: dict[str, bytes], meta: dict[str, Any]) -> None:
        """Queue results under the id of the instance they answer: scoring an instance again after a crash
        replaces its outbox item instead of adding a second one (results are delivered once)."""
        self._write(OUTBOX, Item(item_id, dict(parts), {"attempts": 0, "next_at": 0.0, **meta}))

    def due(self, now: float | None = None) -> list[str]:
        """Outbox ids whose next attempt is due, oldest first (items that cannot be opened are dead-lettered)."""
        now = time.time() if now is None else now
        out = []
        for item_id in self._ids(OUTBOX):
            try:
                meta = self.read(OUTBOX, item_id).meta
            except FileNotFoundError:
                continue
            except SpoolError:
                self.dead_letter(item_id)
                continue
            if float(meta.get("next_at", 0.0)) <= now:
                out.append(item_id)
        return out

    def reschedule(self, item: Item, attempts: int, next_at: float, error: str) -> None:
        item.meta.update(attempts=attempts, next_at=next_at, last_error=error)
        self._write(OUTBOX, item)

    def delivered(self, item_id: str) -> None:
        self._path(OUTBOX, item_id).unlink(missing_ok=True)

    def dead_letter(self, item_id: str, queue: str = OUTBOX) -> None:
        src = self._path(queue, item_id)
        if src.exists():
            os.replace(src, self._path(DEAD, item_id))

    def requeue_dead(self) -> int:
        """Give every dead-lettered result a fresh set of attempts (after the destination is fixed)."""
        n = 0
        for item_id in self._ids(DEAD):
            try:
                item = self.read(DEAD, item_id)
            except SpoolError:
                continue  # stays: it cannot be opened with this secret
            if "instance" in item.parts:
                item.meta.pop("attempts", None)
                self._write(INBOX, item)
            else:
                item.meta.update(attempts=0, next_at=0.0)
                self._write(OUTBOX, item)
            self._path(DEAD, item_id).unlink(missing_ok=True)
            n += 1
        return n


def spool_counts(state_dir: Path) -> dict[str, int]:
    """Items per queue of the spool under ``state_dir`` (file names only: nothing is opened)."""
    root = Path(state_dir) / SPOOL_SUBDIR
    return {q: (sum(1 for p in (root / q).iterdir() if p.name.endswith(_SUFFIX)) if (root / q).is_dir() else 0)
            for q in (INBOX, WORK, OUTBOX, DEAD)}
