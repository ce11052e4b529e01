"""Routing rules: which received instances are scored. Reasons are built only from the rule and from coded
values (Modality, Body Part Examined, View Position are CS codes), never from free text, so they can be
logged and audited."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from radiolens.gateway.config import Routing

_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")


def _code(value) -> str:
    """A CS value safe to log: a defined-term-looking code as it is, anything else as 'other'."""
    v = str(value or "").strip().upper()
    return v if _CODE.match(v) else "other"


def skip_reason(ds: Dataset, rules: Routing) -> str | None:
    """None when ``ds`` is to be scored, else why not (PHI-free)."""
    if "PixelData" not in ds:
        return "no pixel data"
    checks = (("modality", "Modality", rules.modalities), ("body part", "BodyPartExamined", rules.body_parts),
              ("view", "ViewPosition", rules.views))
    for what, keyword, allowed in checks:
        if not allowed:
            continue
        value = str(ds.get(keyword, "") or "").strip().upper()
        if not value:
            if rules.allow_missing and keyword != "Modality":
                continue
            return f"{what} missing"
        if value not in allowed:
            return f"{what} {_code(value)} not routed for scoring"
    return None
