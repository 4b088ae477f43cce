"""horizontal federated training: rounds, participants, masked updates

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "federations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("initiator_org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("feature_schema_json", sa.Text(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("n_params", sa.Integer(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("local_epochs", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "inviting", "running", "done", "aborted", name="federationstate", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=True),
        sa.Column("abort_reason", sa.Text(), nullable=True),
        sa.Column("created_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["initiator_org_id"],
            ["organizations.id"],
            name=op.f("fk_federations_initiator_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federations")),
    )
    with op.batch_alter_table("federations", schema=None) as batch_op:
        batch_op.create_index("ix_federations_initiator_org_id_id", ["initiator_org_id", "id"], unique=False)

    op.create_table(
        "federation_participants",
        sa.Column("federation_id", sa.String(length=40), nullable=False),
        sa.Column("bank_org_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("accepted_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("evaluation_json", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bank_org_id"],
            ["organizations.id"],
            name=op.f("fk_federation_participants_bank_org_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["federation_id"],
            ["federations.id"],
            name=op.f("fk_federation_participants_federation_id_federations"),
        ),
        sa.PrimaryKeyConstraint("federation_id", "bank_org_id", name=op.f("pk_federation_participants")),
        sa.UniqueConstraint(
            "federation_id", "position", name=op.f("uq_federation_participants_federation_id_position")
        ),
    )
    with op.batch_alter_table("federation_participants", schema=None) as batch_op:
        batch_op.create_index("ix_federation_participants_bank_org_id", ["bank_org_id"], unique=False)

    op.create_table(
        "federation_rounds",
        sa.Column("federation_id", sa.String(length=40), nullable=False),
        sa.Column("round_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "phase",
            sa.Enum(
                "advertise_keys",
                "share_keys",
                "masked_input",
                "unmask",
                "done",
                "aborted",
                name="roundphase",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("global_weights", sa.LargeBinary(), nullable=False),
        sa.Column("result_weights", sa.LargeBinary(), nullable=True),
        sa.Column("total_weight", sa.BigInteger(), nullable=True),
        sa.Column("survivors_json", sa.Text(), nullable=True),
        sa.Column("abort_reason", sa.Text(), nullable=True),
        sa.Column("phase_deadline", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["federation_id"], ["federations.id"], name=op.f("fk_federation_rounds_federation_id_federations")
        ),
        sa.PrimaryKeyConstraint("federation_id", "round_no", name=op.f("pk_federation_rounds")),
    )
    op.create_table(
        "federation_messages",
        sa.Column("federation_id", sa.String(length=40), nullable=False),
        sa.Column("round_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("stage", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("bank_org_id", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.Column("created_at", pps.infra.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_org_id"],
            ["organizations.id"],
            name=op.f("fk_federation_messages_bank_org_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["federation_id", "round_no"],
            ["federation_rounds.federation_id", "federation_rounds.round_no"],
            name=op.f("fk_federation_messages_federation_id_federation_rounds"),
        ),
        sa.PrimaryKeyConstraint(
            "federation_id", "round_no", "stage", "bank_org_id", name=op.f("pk_federation_messages")
        ),
    )


def downgrade() -> None:
    op.drop_table("federation_messages")
    op.drop_table("federation_rounds")
    with op.batch_alter_table("federation_participants", schema=None) as batch_op:
        batch_op.drop_index("ix_federation_participants_bank_org_id")

    op.drop_table("federation_participants")
    with op.batch_alter_table("federations", schema=None) as batch_op:
        batch_op.drop_index("ix_federations_initiator_org_id_id")

    op.drop_table("federations")
