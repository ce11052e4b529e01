"""Bounded request parameters, shared by the HTTP routers and the CLI.

Every path and query parameter has a schema with a type and bounds (ASCII-digit patterns, lengths that fit
the database's 64-bit integers, date-times a UTC ``datetime`` can hold), so hostile values are refused as 422
by the schema, and the same values given to the CLI are refused by the same parsers with one line.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import BeforeValidator

from radiolens.errors import InputError

#: Largest value of the database's BIGINT/INTEGER columns (SQLite and PostgreSQL both use signed 64 bit).
INT64_MAX = 2**63 - 1
#: An ASCII decimal id: 18 digits always fit in int64 (19 may not). ``str.isdigit`` is not enough: it is True
#: for superscripts, Arabic-Indic and full-width digits, which ``int()`` then refuses or reads.
ASCII_ID = r"[0-9]{1,18}"
KEY_REF_PATTERN = rf"^(?:[0-9a-f]{{16}}|{ASCII_ID})$"  # a key id (16 hex digits) or a user id
PREDICTION_ID_PATTERN = r"^[0-9a-f]{32}$"


def is_prediction_id(value: str) -> bool:
    """The form of a prediction id (the path parameter's schema, for callers that do not go through it)."""
    return re.fullmatch(PREDICTION_ID_PATTERN, value) is not None
HEAD_PATTERN = rf"^{ASCII_ID}:[0-9a-fA-F]{{64}}$"  # SEQ:HASH, as printed by `radiolens audit head`

PredictionId = Annotated[str, Path(pattern=PREDICTION_ID_PATTERN, min_length=32, max_length=32,
                                   description="prediction id (32 lowercase hex digits)")]
KeyRef = Annotated[str, Path(pattern=KEY_REF_PATTERN, min_length=1, max_length=18,
                             description="key id (16 hex digits) or user id, from `radiolens users list`")]

_ASCII_ID_RE = re.compile(ASCII_ID)
_ISO_DATE_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_text_only(value: object) -> object:
    # pydantic would also take a number of seconds since 1970 ("0.5"), which the schema (date-time) does not allow
    if isinstance(value, str) and not _ISO_DATE_START.match(value):
        raise ValueError("expected an ISO 8601 date-time such as 2024-05-01T00:00:00Z (naive = UTC)")
    return value


#: A query date-time: documented as ``format: date-time``; a naive value is taken as UTC.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text_only)]


def ascii_id(value: str) -> int | None:
    """``value`` as a database integer id, or None when it is not 1-18 ASCII digits."""
    return int(value) if _ASCII_ID_RE.fullmatch(value) else None


def parse_time(value: str | datetime | None, what: str) -> datetime | None:
    """An ISO 8601 date/time (naive = UTC) as an aware UTC datetime; InputError when it is not one.

    A local time whose UTC equivalent falls outside what ``datetime`` holds (``0001-01-01T00:00+14:00`` is in
    year 0 UTC) is clamped to the smallest or largest UTC datetime: as a range bound it means "from the start"
    or "to the end", which is what the caller asked for."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if len(value) > 64 or not value.isascii():
            raise InputError(f"--{what}: not an ISO 8601 date/time")
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InputError(f"--{what}: not an ISO 8601 date/time: {value!r}") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)
