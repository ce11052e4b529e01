"""One entry point: any supported radiograph, a file or bytes in memory -> :class:`RadioImage`.

The format table and the reading itself live in :mod:`radiolens.io.formats`; this module keeps the import path
``radiolens.io.reader.read_image`` that callers use.
"""

from __future__ import annotations

from radiolens.io.formats import read_image

__all__ = ["read_image"]
