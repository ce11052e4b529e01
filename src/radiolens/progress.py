"""Progress bars for work that can take minutes (decoding a folder, fitting a gate, calibrating a quantizer).

One switch for the whole process instead of a ``progress`` argument threaded through every layer: the CLI turns
bars on (by default when stderr is a terminal, or with ``radiolens --progress``); the library, the service and
tests leave them off, so nothing is printed into a notebook, a log file or an HTTP worker. Bars are tqdm's
(rate and ETA), written to stderr so a command's stdout stays parseable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled = False


def enable(on: bool = True) -> None:
    """Turn progress bars on or off for this process."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    """``items`` unchanged, with a bar (count, rate, ETA when ``total`` is known) while enabled."""
    if not _enabled:
        yield from items
        return
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with tqdm(items, desc=desc, total=total, unit=unit, leave=False, smoothing=0.1, dynamic_ncols=True) as bar:
        yield from bar
