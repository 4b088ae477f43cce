"""model approvals, disclosure accounting, output granularity in consent (issue 17)

Revision ID: 0015_model_approvals
Revises: 0014_credit_repair
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0015_model_approvals"
down_revision: str | None = "0014_credit_repair"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("granularity", sa.String(length=16), server_default="score", nullable=False))
    op.create_table(
        "model_approvals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_org_id", sa.String(length=40), nullable=False),
        sa.Column("model_digest", sa.String(length=64), nullable=False),
        sa.Column("policy_digest", sa.String(length=64), nullable=False),
        sa.Column("encrypted_model_sha256", sa.String(length=64), nullable=True),
        sa.Column("context_id", sa.String(length=64), nullable=True),
        sa.Column("approval_json", sa.Text(), nullable=False),
        sa.Column("signing_key", sa.String(length=64), nullable=False),
        sa.Column("sealed_model", sa.Text(), nullable=False),
        sa.Column("created_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_org_id"], ["organizations.id"], name=op.f("fk_model_approvals_bank_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_approvals")),
    )
    op.create_index(
        "ix_model_approvals_bank_org_id_created_at", "model_approvals", ["bank_org_id", "created_at"]
    )
    op.create_index(
        "ix_model_approvals_encrypted_model_sha256", "model_approvals", ["encrypted_model_sha256"]
    )
    op.create_table(
        "disclosures",
        sa.Column("bank_org_id", sa.String(length=40), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("model_digest", sa.String(length=64), nullable=False),
        sa.Column("granularity", sa.String(length=16), nullable=False),
        sa.Column("first_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("releases", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_org_id"], ["organizations.id"], name=op.f("fk_disclosures_bank_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("bank_org_id", "subject_uscc", "model_digest", name=op.f("pk_disclosures")),
    )
    op.create_index("ix_disclosures_subject_uscc", "disclosures", ["subject_uscc"])


def downgrade() -> None:
    op.drop_index("ix_disclosures_subject_uscc", table_name="disclosures")
    op.drop_table("disclosures")
    op.drop_index("ix_model_approvals_encrypted_model_sha256", table_name="model_approvals")
    op.drop_index("ix_model_approvals_bank_org_id_created_at", table_name="model_approvals")
    op.drop_table("model_approvals")
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("granularity")
