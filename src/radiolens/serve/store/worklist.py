"""The worklist query: a page of predictions, newest first, with the filters a reading room needs.

Paging is by keyset (the last row's ``created_at`` and ``id``, handed out as an opaque cursor) rather than by
offset: a page stays correct while new predictions arrive at the top, and each page costs one index range scan
(``ix_predictions_worklist``) however deep the reader pages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from radiolens.errors import InputError
from radiolens.serve.params import is_prediction_id
from radiolens.serve.store.tables import Feedback, Prediction

#: The largest page a client may ask for (a page is one audit row listing its ids).
MAX_PAGE = 100


@dataclass(frozen=True)
class WorklistFilter:
    flagged: bool | None = None  # review flag set (True) or not (False)
    awaiting_feedback: bool | None = None  # True: assessed and no current feedback of the reader; False: has one
    decision: str | None = None  # the decision label, exactly ("normal", "pneumonia", "not assessed", ...)
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until

    def given(self) -> list[str]:
        """The names of the filters in use (what the audit row records: never their values)."""
        return [k for k in ("flagged", "awaiting_feedback", "decision", "since", "until")
                if getattr(self, k) is not None]


def _naive_utc(dt: datetime) -> datetime:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC).replace(tzinfo=None)


def encode_cursor(created_at: datetime, prediction_id: str) -> str:
    raw = f"{_naive_utc(created_at).isoformat(timespec='microseconds')}|{prediction_id}"
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at as naive UTC, id) of a cursor from ``next_cursor``; ``InputError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        when, pid = raw.split("|")
        created = datetime.fromisoformat(when)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InputError("cursor: not a cursor from this worklist's next_cursor") from None
    if created.tzinfo is not None or not is_prediction_id(pid):
        raise InputError("cursor: not a cursor from this worklist's next_cursor")
    return created, pid


@dataclass(frozen=True)
class WorklistPage:
    rows: list[tuple[Prediction, Feedback | None]]  # each prediction with the reader's current feedback
    next_cursor: str | None


def worklist_page(session: Session, reader_id: int, flt: WorklistFilter, limit: int,
                  cursor: str | None = None) -> WorklistPage:
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be 1 to {MAX_PAGE}")
    sqlite = session.get_bind().dialect.name == "sqlite"

    def when(dt: datetime) -> datetime:  # SQLite stores naive UTC strings: compare like with like
        return _naive_utc(dt) if sqlite else _naive_utc(dt).replace(tzinfo=UTC)

    P = Prediction  # noqa: N806 - reads as the table
    mine = exists().where(Feedback.prediction_id == P.id, Feedback.user_id == reader_id,
                          Feedback.superseded_at.is_(None))
    q = select(P)
    if flt.flagged is not None:
        q = q.where(P.review_flag.is_(flt.flagged))
    if flt.decision is not None:
        q = q.where(P.decision == flt.decision)
    if flt.awaiting_feedback is True:  # feedback is refused on predictions that were not assessed
        q = q.where(P.status == "ok", ~mine)
    elif flt.awaiting_feedback is False:
        q = q.where(mine)
    if flt.since is not None:
        q = q.where(P.created_at >= when(flt.since))
    if flt.until is not None:
        q = q.where(P.created_at < when(flt.until))
    if cursor:
        created, pid = decode_cursor(cursor)
        q = q.where(or_(P.created_at < when(created), and_(P.created_at == when(created), P.id < pid)))
    preds = list(session.scalars(q.order_by(P.created_at.desc(), P.id.desc()).limit(limit + 1)))
    more = len(preds) > limit
    preds = preds[:limit]
    feedback: dict[str, Feedback] = {}
    if preds:
        feedback = {f.prediction_id: f for f in session.scalars(
            select(Feedback).where(Feedback.prediction_id.in_([p.id for p in preds]), Feedback.user_id == reader_id,
                                   Feedback.superseded_at.is_(None)))}
    nxt = encode_cursor(preds[-1].created_at, preds[-1].id) if more else None
    return WorklistPage([(p, feedback.get(p.id)) for p in preds], nxt)
