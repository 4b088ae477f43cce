"""horizontal training: per-round statistics and validation loss, and how a federation stopped

``federation_rounds.metrics_json``: round 0's joint feature statistics (federated standardisation) or a
training round's securely aggregated validation loss; ``federations.outcome_json``: rounds run, why training
stopped, whether it converged. Both nullable: federations trained before carry neither.

Revision ID: 0019_federated_validation
Revises: 0018_subject_keys
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_federated_validation"
down_revision: str | None = "0018_subject_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("federation_rounds") as batch:
        batch.add_column(sa.Column("metrics_json", sa.Text(), nullable=True))
    with op.batch_alter_table("federations") as batch:
        batch.add_column(sa.Column("outcome_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("federations") as batch:
        batch.drop_column("outcome_json")
    with op.batch_alter_table("federation_rounds") as batch:
        batch.drop_column("metrics_json")
