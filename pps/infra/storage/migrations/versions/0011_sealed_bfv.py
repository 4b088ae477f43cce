"""sealed datasets: a BFV key pair next to the CKKS one, for exact integer columns

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sealed_contexts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bfv_context_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("bfv_public_context", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("bfv_eval_context", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("bfv_sealed_secret", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sealed_contexts", schema=None) as batch_op:
        batch_op.drop_column("bfv_sealed_secret")
        batch_op.drop_column("bfv_eval_context")
        batch_op.drop_column("bfv_public_context")
        batch_op.drop_column("bfv_context_id")
