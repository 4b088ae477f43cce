"""natural persons (households, individual-business owners) and their rules (pps.identity.persons)

Revision ID: 0016_persons
Revises: 0015_model_approvals
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0016_persons"
down_revision: str | None = "0015_model_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = pps.infra.storage.types.UTCDateTime(timezone=True)
    op.create_table(
        "persons",
        sa.Column("code", sa.String(length=18), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("id_masked", sa.String(length=18), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_persons_org_id_organizations")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_persons")),
        sa.UniqueConstraint("org_id", name=op.f("uq_persons_org_id")),
    )
    op.create_table(
        "person_consent_terms",
        sa.Column("consent_id", sa.String(length=40), nullable=False),
        sa.Column("subject_code", sa.String(length=18), nullable=False),
        sa.Column("separate_grant_at", when, nullable=False),
        sa.Column("sensitive_fields_json", sa.Text(), nullable=False),
        sa.Column("warning_sha256", sa.String(length=64), nullable=True),
        sa.Column("warning_text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_person_consent_terms_consent_id_consents")
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_person_consent_terms")),
    )
    op.create_index(
        op.f("ix_person_consent_terms_subject_code"), "person_consent_terms", ["subject_code"], unique=False
    )
    op.create_table(
        "person_notices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subject_code", sa.String(length=18), nullable=False),
        sa.Column("provider_org_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_org_id"], ["organizations.id"], name=op.f("fk_person_notices_provider_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_person_notices_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person_notices")),
    )
    op.create_index(op.f("ix_person_notices_subject_code"), "person_notices", ["subject_code"], unique=False)
    op.create_table(
        "free_reports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subject_code", sa.String(length=18), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("issued_at", when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_free_reports")),
    )
    op.create_index(op.f("ix_free_reports_subject_code"), "free_reports", ["subject_code"], unique=False)
    op.create_table(
        "impact_assessments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("activity", sa.String(length=500), nullable=False),
        sa.Column("assessment_json", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("retain_until", when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_impact_assessments")),
    )
    op.create_index(op.f("ix_impact_assessments_purpose"), "impact_assessments", ["purpose"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_impact_assessments_purpose"), table_name="impact_assessments")
    op.drop_table("impact_assessments")
    op.drop_index(op.f("ix_free_reports_subject_code"), table_name="free_reports")
    op.drop_table("free_reports")
    op.drop_index(op.f("ix_person_notices_subject_code"), table_name="person_notices")
    op.drop_table("person_notices")
    op.drop_index(op.f("ix_person_consent_terms_subject_code"), table_name="person_consent_terms")
    op.drop_table("person_consent_terms")
    op.drop_table("persons")
