"""subject-held keys, signed consent actions, enrolment codes, two-operator break-glass (issue 24)

Revision ID: 0018_subject_keys
Revises: 0017_field_grades
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0018_subject_keys"
down_revision: str | None = "0017_field_grades"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_T = pps.infra.storage.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=200), nullable=False),
        sa.Column("credential_id", sa.String(length=400), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("verification_ref", sa.String(length=80), nullable=False),
        sa.Column("representative_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("enrolled_at", _T(timezone=True), nullable=False),
        sa.Column("revoked_at", _T(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_subject_keys_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_subject_keys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_subject_keys_credential_id")),
    )
    op.create_index(op.f("ix_subject_keys_org_id"), "subject_keys", ["org_id"], unique=False)
    op.create_index(op.f("ix_subject_keys_subject_uscc"), "subject_keys", ["subject_uscc"], unique=False)
    op.create_table(
        "consent_signatures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("consent_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("signed_at", _T(timezone=True), nullable=False),
        sa.Column("recorded_at", _T(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_consent_signatures_consent_id_consents")
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["subject_keys.key_id"], name=op.f("fk_consent_signatures_key_id_subject_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_signatures")),
        sa.UniqueConstraint("nonce", name=op.f("uq_consent_signatures_nonce")),
    )
    op.create_index(
        op.f("ix_consent_signatures_consent_id"), "consent_signatures", ["consent_id"], unique=False
    )
    op.create_table(
        "enrolment_codes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", _T(timezone=True), nullable=False),
        sa.Column("expires_at", _T(timezone=True), nullable=False),
        sa.Column("used_at", _T(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_enrolment_codes_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_enrolment_codes_code_hash")),
    )
    op.create_index(op.f("ix_enrolment_codes_org_id"), "enrolment_codes", ["org_id"], unique=False)
    op.create_table(
        "break_glass",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("proposed_by", sa.String(length=40), nullable=False),
        sa.Column("proposed_at", _T(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=40), nullable=True),
        sa.Column("done_at", _T(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_break_glass_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass")),
    )
    op.create_index(op.f("ix_break_glass_org_id"), "break_glass", ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_break_glass_org_id"), table_name="break_glass")
    op.drop_table("break_glass")
    op.drop_index(op.f("ix_enrolment_codes_org_id"), table_name="enrolment_codes")
    op.drop_table("enrolment_codes")
    op.drop_index(op.f("ix_consent_signatures_consent_id"), table_name="consent_signatures")
    op.drop_table("consent_signatures")
    op.drop_index(op.f("ix_subject_keys_subject_uscc"), table_name="subject_keys")
    op.drop_index(op.f("ix_subject_keys_org_id"), table_name="subject_keys")
    op.drop_table("subject_keys")
