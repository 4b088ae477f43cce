"""a person's erasure at its request (PIPL Art. 47): persons.erased_at

Revision ID: 0021_person_erasure
Revises: 0020_disclosure_modes
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0021_person_erasure"
down_revision: str | None = "0020_disclosure_modes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.add_column(
            sa.Column("erased_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("erased_at")
