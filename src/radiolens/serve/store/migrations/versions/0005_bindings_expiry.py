"""Served data bound to the audit chain; optional API-key expiry.

* ``audit_log.prediction_id`` gets an index (every read of a prediction looks up its chained rows) and a
  partial unique index on ``event = 'prediction'``: one chained prediction row per prediction, so a second,
  forged row that claims another result for the same id is refused by the database.
* ``api_keys.expires_at`` (nullable): a key is refused from that time on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_audit_log_prediction_id", "audit_log", ["prediction_id"])
    op.create_index("uq_audit_log_one_prediction_row", "audit_log", ["prediction_id"], unique=True,
                    sqlite_where=sa.text("event = 'prediction'"), postgresql_where=sa.text("event = 'prediction'"))


def downgrade() -> None:
    op.drop_index("uq_audit_log_one_prediction_row", "audit_log")
    op.drop_index("ix_audit_log_prediction_id", "audit_log")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
