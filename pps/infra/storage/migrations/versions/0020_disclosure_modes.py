"""disclosure modes per field and the signed documents they let out (issue 23)

Every column of every existing dataset schema (and of every version) gets the disclosure mode it had implicitly:
``never`` for class C3, JR/T 0197 level 5 and important data, ``masked`` for C1, ``compute_only`` otherwise
(no field becomes ``public`` by migration: a provider declares that, naming where it is published). The table
``disclosure_documents`` holds the credit reports and query results released (erased at expiry). The downgrade
drops the table and removes only the modes the upgrade would have added.

Revision ID: 0020_disclosure_modes
Revises: 0019_federated_validation
Create Date: 2026-12-07
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pps.infra.storage.types

revision: str = "0020_disclosure_modes"
down_revision: str | None = "0019_federated_validation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEVEL = {"C1": 2, "C2": 3, "C3": 4}

datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("schema_json", sa.Text))
versions = sa.table(
    "dataset_versions",
    sa.column("dataset_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("schema_json", sa.Text),
)


def _derived(col: dict[str, object]) -> str:
    level = col.get("level")
    grade = level if isinstance(level, int) else _LEVEL.get(str(col.get("sensitivity")), 3)
    if col.get("sensitivity") == "C3" or grade >= 5 or col.get("important"):
        return "never"
    return "masked" if col.get("sensitivity") == "C1" else "compute_only"


def _with_modes(text: str) -> str:
    schema = json.loads(text)
    for col in schema.get("columns", []):
        if col.get("disclosure") is None:
            col["disclosure"] = _derived(col)
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _without_modes(text: str) -> str:
    schema = json.loads(text)
    for col in schema.get("columns", []):
        if col.get("disclosure") == _derived(col):
            col.pop("disclosure", None)
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _rewrite(convert: object) -> None:
    assert callable(convert)
    conn = op.get_bind()
    for ds_id, text in conn.execute(sa.select(datasets.c.id, datasets.c.schema_json)).all():
        conn.execute(datasets.update().where(datasets.c.id == ds_id).values(schema_json=convert(text)))
    rows = conn.execute(sa.select(versions.c.dataset_id, versions.c.version, versions.c.schema_json)).all()
    for ds_id, number, text in rows:
        conn.execute(
            versions.update()
            .where(versions.c.dataset_id == ds_id, versions.c.version == number)
            .values(schema_json=convert(text))
        )


def upgrade() -> None:
    when = pps.infra.storage.types.UTCDateTime(timezone=True)
    op.create_table(
        "disclosure_documents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject_uscc", sa.String(length=18), nullable=False),
        sa.Column("bank_org_id", sa.String(length=40), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("expires_at", when, nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosure_documents")),
    )
    op.create_index(
        op.f("ix_disclosure_documents_bank_org_id_created_at"),
        "disclosure_documents",
        ["bank_org_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_disclosure_documents_subject_uscc"), "disclosure_documents", ["subject_uscc"], unique=False
    )
    _rewrite(_with_modes)


def downgrade() -> None:
    _rewrite(_without_modes)
    op.drop_index(op.f("ix_disclosure_documents_subject_uscc"), table_name="disclosure_documents")
    op.drop_index(op.f("ix_disclosure_documents_bank_org_id_created_at"), table_name="disclosure_documents")
    op.drop_table("disclosure_documents")
