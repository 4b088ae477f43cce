"""objections and corrections: subjects' objections, their sealed evidence, banks' correction notices

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('objections',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('subject_uscc', sa.String(length=18), nullable=False),
    sa.Column('subject_org_id', sa.String(length=40), nullable=False),
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('provider_org_id', sa.String(length=40), nullable=False),
    sa.Column('filed_version', sa.Integer(), nullable=False),
    sa.Column('fields_json', sa.Text(), nullable=False),
    sa.Column('state', sa.Enum('open', 'accepted', 'rejected', name='objectionstate', native_enum=False, length=16), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('wrapped_dek', sa.LargeBinary(), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('has_evidence', sa.Boolean(), nullable=False),
    sa.Column('due_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('corrected_version', sa.Integer(), nullable=True),
    sa.Column('corrected_fields_json', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_objections_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['provider_org_id'], ['organizations.id'], name=op.f('fk_objections_provider_org_id_organizations')),
    sa.ForeignKeyConstraint(['subject_org_id'], ['organizations.id'], name=op.f('fk_objections_subject_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objections'))
    )
    with op.batch_alter_table('objections', schema=None) as batch_op:
        batch_op.create_index('ix_objections_dataset_id_state', ['dataset_id', 'state'], unique=False)
        batch_op.create_index('ix_objections_provider_org_id_state', ['provider_org_id', 'state'], unique=False)
        batch_op.create_index('ix_objections_subject_uscc_state', ['subject_uscc', 'state'], unique=False)

    op.create_table('correction_notices',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bank_org_id', sa.String(length=40), nullable=False),
    sa.Column('objection_id', sa.String(length=40), nullable=False),
    sa.Column('subject_uscc', sa.String(length=18), nullable=False),
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('fields_json', sa.Text(), nullable=False),
    sa.Column('result_kind', sa.String(length=32), nullable=False),
    sa.Column('result_id', sa.String(length=64), nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=True),
    sa.Column('ledger_index', sa.BigInteger(), nullable=False),
    sa.Column('released_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('old_version', sa.Integer(), nullable=False),
    sa.Column('new_version', sa.Integer(), nullable=False),
    sa.Column('created_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organizations.id'], name=op.f('fk_correction_notices_bank_org_id_organizations')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_correction_notices_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['objection_id'], ['objections.id'], name=op.f('fk_correction_notices_objection_id_objections')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_correction_notices')),
    sa.UniqueConstraint('objection_id', 'ledger_index', name=op.f('uq_correction_notices_objection_id_ledger_index'))
    )
    with op.batch_alter_table('correction_notices', schema=None) as batch_op:
        batch_op.create_index('ix_correction_notices_bank_org_id_id', ['bank_org_id', 'id'], unique=False)

    op.create_table('objection_evidence',
    sa.Column('objection_id', sa.String(length=40), nullable=False),
    sa.Column('media_type', sa.String(length=32), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['objection_id'], ['objections.id'], name=op.f('fk_objection_evidence_objection_id_objections')),
    sa.PrimaryKeyConstraint('objection_id', name=op.f('pk_objection_evidence'))
    )


def downgrade() -> None:
    op.drop_table('objection_evidence')
    with op.batch_alter_table('correction_notices', schema=None) as batch_op:
        batch_op.drop_index('ix_correction_notices_bank_org_id_id')

    op.drop_table('correction_notices')
    with op.batch_alter_table('objections', schema=None) as batch_op:
        batch_op.drop_index('ix_objections_subject_uscc_state')
        batch_op.drop_index('ix_objections_provider_org_id_state')
        batch_op.drop_index('ix_objections_dataset_id_state')

    op.drop_table('objections')
