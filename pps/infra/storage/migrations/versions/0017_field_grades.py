"""grade every field of existing datasets under JR/T 0197-2020 (level 1-5, important data)

Schemas declared before fields carried a JR/T 0197 level get one derived from their JR/T 0171 class
(C1 -> 2, C2 -> 3, C3 -> 4), ``important: false`` and ``income_or_assets: false``, in the dataset and in every
version, so the policy engine reads the same grades for old and new data. Fields that already carry a level
are left as they are. The downgrade removes only what the upgrade would have added (levels equal to the
derived ones, and false flags).

Revision ID: 0017_field_grades
Revises: 0016_persons
Create Date: 2026-12-07
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_field_grades"
down_revision: str | None = "0016_persons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DERIVED = {"C1": 2, "C2": 3, "C3": 4}

datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("schema_json", sa.Text))
versions = sa.table(
    "dataset_versions",
    sa.column("dataset_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("schema_json", sa.Text),
)


def _graded(text: str) -> str:
    schema = json.loads(text)
    for col in schema.get("columns", []):
        if col.get("level") is None:
            col["level"] = _DERIVED.get(col.get("sensitivity"), 3)
        col.setdefault("important", False)
        col.setdefault("income_or_assets", False)
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _ungraded(text: str) -> str:
    schema = json.loads(text)
    for col in schema.get("columns", []):
        if col.get("level") == _DERIVED.get(col.get("sensitivity")):
            col.pop("level", None)
        for flag in ("important", "income_or_assets"):
            if col.get(flag) is False:
                col.pop(flag)
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
    _rewrite(_graded)


def downgrade() -> None:
    _rewrite(_ungraded)
