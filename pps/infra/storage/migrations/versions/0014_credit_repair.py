"""dishonesty record exclusions, credit repair applications, proofs and notices, statements

Revision ID: 0014_credit_repair
Revises: 0013_session_holders
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0014_credit_repair"
down_revision: str | None = "0013_session_holders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = pps.infra.storage.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "record_exclusions",
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("repair_id", sa.String(length=40), nullable=True),
        sa.Column("excluded_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_record_exclusions_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("dataset_id", "record_id", name=op.f("pk_record_exclusions")),
    )
    op.create_index("ix_record_exclusions_subject_uscc", "record_exclusions", ["subject_uscc"])
    op.create_table(
        "repair_applications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("subject_org_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("authority_org_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("commitment_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("checks_json", sa.Text(), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("due_at", UTC(timezone=True), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("decided_at", UTC(timezone=True), nullable=True),
        sa.Column("reasons_json", sa.Text(), nullable=True),
        sa.Column("objection_text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["authority_org_id"],
            ["organizations.id"],
            name=op.f("fk_repair_applications_authority_org_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_repair_applications_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["subject_org_id"],
            ["organizations.id"],
            name=op.f("fk_repair_applications_subject_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repair_applications")),
    )
    op.create_index(
        "ix_repair_applications_subject_uscc_state", "repair_applications", ["subject_uscc", "state"]
    )
    op.create_index(
        "ix_repair_applications_authority_org_id_state", "repair_applications", ["authority_org_id", "state"]
    )
    op.create_index(
        "ix_repair_applications_dataset_id_record_id", "repair_applications", ["dataset_id", "record_id"]
    )
    op.create_table(
        "repair_proofs",
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["repair_applications.id"],
            name=op.f("fk_repair_proofs_application_id_repair_applications"),
        ),
        sa.PrimaryKeyConstraint("application_id", "position", name=op.f("pk_repair_proofs")),
    )
    op.create_table(
        "repair_notices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_org_id", sa.String(length=40), nullable=False),
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("result_kind", sa.String(length=32), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.Column("released_at", UTC(timezone=True), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["repair_applications.id"],
            name=op.f("fk_repair_notices_application_id_repair_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["bank_org_id"], ["organizations.id"], name=op.f("fk_repair_notices_bank_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_repair_notices_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repair_notices")),
        sa.UniqueConstraint(
            "application_id", "ledger_index", name=op.f("uq_repair_notices_application_id_ledger_index")
        ),
    )
    op.create_index("ix_repair_notices_bank_org_id_id", "repair_notices", ["bank_org_id", "id"])
    op.create_table(
        "record_statements",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("record_key", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("withdrawn_at", UTC(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_record_statements_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_statements")),
        sa.UniqueConstraint(
            "subject_uscc",
            "dataset_id",
            "record_key",
            name=op.f("uq_record_statements_subject_uscc_dataset_id_record_key"),
        ),
    )


def downgrade() -> None:
    op.drop_table("record_statements")
    op.drop_index("ix_repair_notices_bank_org_id_id", table_name="repair_notices")
    op.drop_table("repair_notices")
    op.drop_table("repair_proofs")
    op.drop_index("ix_repair_applications_dataset_id_record_id", table_name="repair_applications")
    op.drop_index("ix_repair_applications_authority_org_id_state", table_name="repair_applications")
    op.drop_index("ix_repair_applications_subject_uscc_state", table_name="repair_applications")
    op.drop_table("repair_applications")
    op.drop_index("ix_record_exclusions_subject_uscc", table_name="record_exclusions")
    op.drop_table("record_exclusions")
