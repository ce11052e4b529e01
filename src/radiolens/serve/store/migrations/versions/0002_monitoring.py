"""Monitoring records: per prediction, what the input gate and the drift monitor need (no PHI).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitoring_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ood_score", sa.Float(), nullable=True),
        sa.Column("record_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_monitoring_records_prediction_id", "monitoring_records", ["prediction_id"], unique=True)
    op.create_index("ix_monitoring_records_created_at", "monitoring_records", ["created_at"])
    op.create_index("ix_monitoring_records_model_sha256", "monitoring_records", ["model_sha256"])


def downgrade() -> None:
    op.drop_table("monitoring_records")
