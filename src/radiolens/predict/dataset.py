"""Decoding + preprocessing as a torch Dataset, so DataLoader worker processes do it in parallel and ahead
of inference. An unreadable file yields an error record instead of raising: one bad file must never take
down a run over thousands.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch.utils.data

from radiolens.errors import RadiolensError, UnreadableImageError
from radiolens.io.formats import read_image
from radiolens.io.image import ImageMeta
from radiolens.models.bundle import BundleInfo
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


class ImageItems(torch.utils.data.Dataset):
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
