"""model registry: registered models, their sealed artifacts, vertical training sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.Column('owners_json', sa.Text(), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=True),
    sa.Column('features_json', sa.Text(), nullable=False),
    sa.Column('training_json', sa.Text(), nullable=False),
    sa.Column('evaluation_json', sa.Text(), nullable=True),
    sa.Column('evaluated_by', sa.String(length=40), nullable=True),
    sa.Column('ledger_json', sa.Text(), nullable=False),
    sa.Column('state', sa.Enum('active', 'retired', name='modelstate', native_enum=False, length=16), nullable=False),
    sa.Column('created_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['organizations.id'], name=op.f('fk_models_created_by_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index('ix_models_created_by_created_at', ['created_by', 'created_at'], unique=False)

    op.create_table('vertical_trainings',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bank_org_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('features_json', sa.Text(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('training', 'finished', 'failed', name='trainingstate', native_enum=False, length=16), nullable=False),
    sa.Column('epochs_done', sa.Integer(), nullable=False),
    sa.Column('enclave_handle', sa.String(length=40), nullable=False),
    sa.Column('enclave_instance', sa.Integer(), nullable=False),
    sa.Column('quote_hash', sa.String(length=64), nullable=False),
    sa.Column('admission_index', sa.BigInteger(), nullable=False),
    sa.Column('model_id', sa.String(length=40), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organizations.id'], name=op.f('fk_vertical_trainings_bank_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vertical_trainings'))
    )
    with op.batch_alter_table('vertical_trainings', schema=None) as batch_op:
        batch_op.create_index('ix_vertical_trainings_bank_org_id_created_at', ['bank_org_id', 'created_at'], unique=False)

    op.create_table('model_artifacts',
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('holder', sa.String(length=40), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('wrapped_dek', sa.LargeBinary(), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('sha256', sa.LargeBinary(length=32), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_artifacts_model_id_models')),
    sa.PrimaryKeyConstraint('model_id', 'holder', name=op.f('pk_model_artifacts'))
    )


def downgrade() -> None:
    op.drop_table('model_artifacts')
    with op.batch_alter_table('vertical_trainings', schema=None) as batch_op:
        batch_op.drop_index('ix_vertical_trainings_bank_org_id_created_at')

    op.drop_table('vertical_trainings')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('ix_models_created_by_created_at')

    op.drop_table('models')
