"""aggregates: privacy budgets, released cohorts, the providers' platform-aggregate opt-in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform_aggregates', sa.Boolean(), server_default=sa.false(), nullable=False))

    op.create_table('privacy_budgets',
    sa.Column('bank_org_id', sa.String(length=40), nullable=False),
    sa.Column('total_micro', sa.BigInteger(), nullable=False),
    sa.Column('spent_micro', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('spent_micro >= 0 AND spent_micro <= total_micro', name=op.f('ck_privacy_budgets_spent_within_total')),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organizations.id'], name=op.f('fk_privacy_budgets_bank_org_id_organizations')),
    sa.PrimaryKeyConstraint('bank_org_id', name=op.f('pk_privacy_budgets'))
    )
    op.create_table('released_cohorts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bank_org_id', sa.String(length=40), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('members', sa.LargeBinary(), nullable=False),
    sa.Column('query_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organizations.id'], name=op.f('fk_released_cohorts_bank_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_released_cohorts')),
    sa.UniqueConstraint('bank_org_id', 'digest', name=op.f('uq_released_cohorts_bank_org_id_digest'))
    )
    with op.batch_alter_table('released_cohorts', schema=None) as batch_op:
        batch_op.create_index('ix_released_cohorts_bank_org_id_size', ['bank_org_id', 'size'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('released_cohorts', schema=None) as batch_op:
        batch_op.drop_index('ix_released_cohorts_bank_org_id_size')

    op.drop_table('released_cohorts')
    op.drop_table('privacy_budgets')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('platform_aggregates')
