"""which process holds a long-lived session (pps.infra.recovery)

Revision ID: 0013_session_holders
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0013_session_holders"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_holders",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=40), nullable=False),
        sa.Column("runner", sa.String(length=200), nullable=False),
        sa.Column("created_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", name=op.f("pk_session_holders")),
    )


def downgrade() -> None:
    op.drop_table("session_holders")
