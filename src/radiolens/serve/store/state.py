"""The service's state folder is private: the folder and every folder in it 0700, every file 0600.

It holds the SQLite database (predictions, the audit log), de-identified display images and heatmaps:
nothing another local user may read. New paths get these modes when they are created (explicit modes
here and in ``db.make_engine``; ``private_umask`` around CLI runs for files that libraries create, such
as SQLite's WAL/SHM files and Prometheus' multiprocess files); a folder that already exists, e.g. from a
version that created it 0755/0644, is tightened on start, with a warning naming how many paths changed.
A folder, or anything in it, owned by another user is refused: it cannot be tightened, and whoever owns it
can read it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from radiolens.errors import ConfigError

log = logging.getLogger("radiolens.serve")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile (by this process and the processes it starts) are private."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _tighten(path: Path, st: os.stat_result, wanted: int) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"state folder: {path} is owned by another user and readable by others; the service "
                          "will not keep de-identified images and the audit database there (fix its owner or "
                          "mode, or choose another --state-dir)")
    os.chmod(path, mode & wanted)
    return True


def secure_state_dir(path: Path) -> int:
    """Create ``path`` 0700, or tighten an existing one and everything in it; returns how many paths changed."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask, never widened; be explicit
        return 0
    if not path.is_dir():
        raise ConfigError(f"state folder: {path} exists and is not a folder")
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"state folder: {path} is owned by another user; choose a --state-dir of your own")
    changed = int(_tighten(path, st, PRIVATE_DIR))
    for root, dirs, files in os.walk(path):  # symbolic links are neither followed nor changed
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            changed += _tighten(p, st, PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE)
    if changed:
        log.warning("state folder: tightened the permissions of %d path(s) that other users could read "
                    "(folders are now 0700, files 0600)", changed)
    return changed


def private_dir(path: Path) -> Path:
    """A folder inside the state folder, created 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename), mode 0600 from the start."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an older .tmp left by a crash keeps its mode through O_TRUNC
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd != -1:
            os.close(fd)
    tmp.replace(path)
