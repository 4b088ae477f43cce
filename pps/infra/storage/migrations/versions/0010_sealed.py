"""sealed datasets: HE-encrypted columns under the enclave's public context

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sealed_contexts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("public_context", sa.LargeBinary(), nullable=False),
        sa.Column("eval_context", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("measurement", sa.String(length=64), nullable=False),
        sa.Column("created_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_contexts")),
    )
    op.create_table(
        "sealed_datasets",
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("context_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("n_subjects", sa.Integer(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("subjects_json", sa.Text(), nullable=False),
        sa.Column("attributes_json", sa.Text(), nullable=False),
        sa.Column("columns_json", sa.Text(), nullable=False),
        sa.Column("uploaded_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["context_id"], ["sealed_contexts.id"], name=op.f("fk_sealed_datasets_context_id_sealed_contexts")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_sealed_datasets_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_sealed_datasets")),
    )
    with op.batch_alter_table("sealed_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_datasets_context_id"), ["context_id"], unique=False)

    op.create_table(
        "sealed_blocks",
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("column", sa.String(length=64), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["sealed_datasets.dataset_id"],
            name=op.f("fk_sealed_blocks_dataset_id_sealed_datasets"),
        ),
        sa.PrimaryKeyConstraint("dataset_id", "column", "block", name=op.f("pk_sealed_blocks")),
    )


def downgrade() -> None:
    op.drop_table("sealed_blocks")
    with op.batch_alter_table("sealed_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_datasets_context_id"))

    op.drop_table("sealed_datasets")
    op.drop_table("sealed_contexts")
