"""Decoding + preprocessing as a map-style dataset, so worker processes do it in parallel and ahead of
inference. An unreadable file yields an error record instead of raising: one bad file must never take down a
run over thousands.

With PyTorch installed the batches come from its DataLoader (prefetching workers); without it (a
``radiolens[serve]`` installation scoring an ONNX export) from a ``multiprocessing`` pool, or in the main
process when there are no workers. Either way the records and their order are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from radiolens.errors import RadiolensError, UnreadableImageError, missing_extra
from radiolens.io.formats import read_image
from radiolens.io.image import ImageMeta
from radiolens.models.info import BundleInfo
from radiolens.pipeline.predictor import Prepared, prepare
from radiolens.predict.sources import ScoreItem


def uid_hash(uid: str | None) -> str:
    """A one-way tag of the SOP Instance UID: lets a site join results back to its own PACS without the
    results file carrying the identifier itself."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16] if uid else ""


@dataclass
class Decoded:
    index: int
    tensor: np.ndarray | None  # (1, H, W) float32, normalised; None on error
    error_code: str = ""
    error_message: str = ""
    sop_uid_hash: str = ""
    # What the input gate's header rules read (kept in memory only, never written to the results).
    meta: ImageMeta | None = None
    height: int = 0
    width: int = 0


class ImageItems:
    """Map-style (``len`` and indexing): what torch's DataLoader and a process pool both take."""

    def __init__(self, items: list[ScoreItem], info: BundleInfo):
        self.items = items
        self.info = info

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Decoded:
        item = self.items[index]
        try:
            image = read_image(item.path)
            ready = prepare(self.info, image)  # the pipeline's CPU stage, here in a worker process
            return Decoded(index, ready.tensor, sop_uid_hash=uid_hash(image.meta.sop_instance_uid), meta=ready.meta,
                           height=ready.height, width=ready.width)
        except RadiolensError as exc:
            return Decoded(index, None, exc.code, str(exc))
        except Exception as exc:  # a decoder bug on one file is still one error row, not a dead run
            return Decoded(index, None, UnreadableImageError.code,
                           f"{item.path.name}: unexpected decoding failure ({type(exc).__name__})")


def prepared(record: Decoded) -> Prepared:
    """The pipeline's input for a decoded record (``tensor`` and ``meta`` set)."""
    assert record.tensor is not None and record.meta is not None
    return Prepared(record.tensor, record.meta, record.height, record.width)


def collate(records: list[Decoded]) -> list[Decoded]:
    return records  # stacking happens after errors are separated out


def decoded_batches(dataset: ImageItems, batch_size: int, workers: int, prefetch_batches: int
                    ) -> Iterator[list[Decoded]]:
    """Batches of decoded records in item order, decoded by ``workers`` processes (0: in this process)."""
    n = len(dataset)
    if n == 0:
        return
    try:
        import torch.utils.data
    except ImportError as exc:
        if missing_extra(exc) is None:
            raise
        yield from _pool_batches(dataset, batch_size, workers)
        return
    yield from torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
        num_workers=workers if n > batch_size else min(workers, 1),
        prefetch_factor=prefetch_batches if workers else None)


def _pool_batches(dataset: ImageItems, batch_size: int, workers: int) -> Iterator[list[Decoded]]:
    n = len(dataset)
    if not workers:
        for start in range(0, n, batch_size):
            yield [dataset[i] for i in range(start, min(n, start + batch_size))]
        return
    import multiprocessing

    with multiprocessing.Pool(min(workers, n)) as pool:
        batch: list[Decoded] = []
        for record in pool.imap(dataset.__getitem__, range(n), chunksize=max(1, batch_size // (2 * workers))):
            batch.append(record)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
