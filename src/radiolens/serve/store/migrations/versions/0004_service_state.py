"""Service state: a small key/value table for facts the service checks at start-up.

The first key is ``deid_secret_fingerprint``: the service stores the fingerprint of the de-identification
secret it was first started with and refuses to start with a different one unless told to rotate (audited),
because study refs and remapped UIDs made under another secret no longer match the earlier ones.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_state")
