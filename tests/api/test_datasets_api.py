"""Datasets over the API: providers upload and follow lineage, banks see the catalogue, subjects their own
records — and no route ever returns rows of a dataset to anyone but the enterprise they are about."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.routing import APIRoute

from api.app import ROUTERS
from api.deps import declared_roles
from pps.data.datasets.ingest import UploadLimits
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from pps_client import Client, Conflict, InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from pps_wire.schemas import DatasetPublic
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA, tax_rows, to_csv, to_ndjson, to_parquet

SENTINEL = "SENTINEL-4d2b-记录"
SENTINEL_AMOUNT = 31415926.5


@pytest.fixture
def orgs(make_org: OrgFactory) -> dict[str, OrgHandle]:
    return {
        "admin": make_org(Role.platform_admin),
        "auditor": make_org(Role.auditor),
        "provider": make_org(Role.data_provider, "Tax bureau"),
        "other_provider": make_org(Role.data_provider, "Power company"),
        "bank": make_org(Role.bank),
        "owner": make_org(Role.subject, uscc=uscc_for(0)),  # the enterprise the sentinel rows are about
        "other_subject": make_org(Role.subject, uscc=uscc_for(1)),
    }


@pytest.fixture
def clients(orgs: dict[str, OrgHandle], base_url: str) -> dict[str, Client]:
    return {name: Client(base_url, o.token) for name, o in orgs.items()}


@pytest.fixture
def tax(clients: dict[str, Client]) -> DatasetPublic:
    rows = tax_rows(10, months=2)
    rows[0]["note"] = SENTINEL  # about uscc_for(0)
    rows[1]["tax_paid"] = SENTINEL_AMOUNT
    ds = clients["provider"].datasets.create("tax", TAX_SCHEMA, description="monthly tax")
    version = clients["provider"].datasets.upload(ds.id, to_csv(rows), fmt="csv")
    assert version.rows == 20
    return ds


def test_upload_in_every_format_and_read_metadata(clients: dict[str, Client], tax: DatasetPublic) -> None:
    provider = clients["provider"]
    ds_id = tax.id
    assert provider.datasets.upload(ds_id, to_ndjson(tax_rows(4)), fmt="ndjson").version == 2
    assert provider.datasets.upload(ds_id, to_parquet(tax_rows(5)), fmt="parquet").version == 3
    meta = provider.datasets.get(ds_id)
    assert [v.rows for v in meta.versions] == [20, 12, 15]
    assert meta.current_version == 3
    assert [d.id for d in provider.datasets.list()] == [ds_id]
    assert clients["other_provider"].datasets.list() == []
    assert [d.id for d in clients["auditor"].datasets.list()] == [ds_id]


def test_streamed_upload(clients: dict[str, Client], tax: DatasetPublic) -> None:
    data = to_csv(tax_rows(50))
    pieces = (data[i : i + 997] for i in range(0, len(data), 997))
    assert clients["provider"].datasets.upload(tax.id, pieces, fmt="csv").rows == 150


def test_rejected_upload_names_rows_and_stores_nothing(
    clients: dict[str, Client], tax: DatasetPublic
) -> None:
    rows = tax_rows(3)
    rows[2]["uscc"] = "91350100M000100Y44"
    with pytest.raises(InvalidRequest) as info:
        clients["provider"].datasets.upload(tax.id, to_csv(rows), fmt="csv")
    assert info.value.code == "upload_rejected"
    assert info.value.details["problems"][0]["row"] == 4
    assert len(clients["provider"].datasets.get(tax.id).versions) == 1


def test_who_may_do_what(clients: dict[str, Client], tax: DatasetPublic) -> None:
    ds_id = tax.id
    with pytest.raises(PermissionDenied, match="role"):
        clients["bank"].datasets.create("mine", TAX_SCHEMA)
    with pytest.raises(PermissionDenied, match="role"):
        clients["bank"].datasets.upload(ds_id, to_csv(tax_rows(1)), fmt="csv")
    with pytest.raises(PermissionDenied, match="role"):
        clients["owner"].datasets.get(ds_id)
    for call in (
        lambda c: c.datasets.get(ds_id),
        lambda c: c.datasets.upload(ds_id, to_csv(tax_rows(1)), fmt="csv"),
        lambda c: c.datasets.lineage(ds_id),
        lambda c: c.datasets.delete(ds_id),
    ):
        with pytest.raises(NotFound):
            call(clients["other_provider"])
    with pytest.raises(Conflict):
        clients["provider"].datasets.create("tax", TAX_SCHEMA)


def test_lineage_catalogue_and_self_query(clients: dict[str, Client], tax: DatasetPublic) -> None:
    ds_id = tax.id
    mine = clients["owner"].datasets.my_records()
    assert len(mine) == 1 and mine[0].dataset_id == ds_id and mine[0].provider == "Tax bureau"
    assert {r["uscc"] for r in mine[0].rows} == {uscc_for(0)}
    assert any(r["note"] == SENTINEL for r in mine[0].rows)  # its own data, C3 included, for free
    assert all(
        r["uscc"] == uscc_for(1) for d in clients["other_subject"].datasets.my_records() for r in d.rows
    )
    lineage = clients["provider"].datasets.lineage(ds_id)
    actions = [e.entry["action"] for e in lineage]
    assert actions == ["dataset.create", "dataset.upload", "subject.self_query", "subject.self_query"]
    assert lineage[2].entry["subjects"][0].count("*") == 12  # the provider sees masked identifiers
    assert lineage[2].entry_b64 == ""
    full = clients["auditor"].datasets.lineage(ds_id)
    assert full[2].entry["subjects"] == [uscc_for(0)]
    catalogue = clients["bank"].datasets.catalog()
    assert [c.name for c in catalogue[0].columns] == [c["name"] for c in TAX_SCHEMA["columns"]]
    assert catalogue[0].rows == 20 and catalogue[0].provider == "Tax bureau"
    history = [i.entry["action"] for i in clients["owner"].ledger.mine().items]
    assert "subject.self_query" in history


def test_delete_then_the_dataset_is_gone_but_its_history_stays(
    clients: dict[str, Client], tax: DatasetPublic
) -> None:
    ds_id = tax.id
    gone = clients["provider"].datasets.delete(ds_id)
    assert gone.deleted_at and all(v.shredded_at for v in gone.versions)
    with pytest.raises(NotFound):
        clients["provider"].datasets.get(ds_id)
    assert clients["owner"].datasets.my_records() == []
    assert clients["provider"].datasets.lineage(ds_id)[-1].entry["action"] == "dataset.delete"


def test_uploads_have_their_own_size_limit(
    clients: dict[str, Client],
    orgs: dict[str, OrgHandle],
    tax: DatasetPublic,
    http: Callable[..., httpx.Client],
) -> None:
    big = to_csv(tax_rows(2)) + b"x" * (2 << 20)  # over the 1 MiB API limit, under the upload limit
    with pytest.raises(InvalidRequest) as refused:
        clients["provider"].datasets.upload(tax.id, big, fmt="csv")
    assert refused.value.code == "upload_rejected"
    response = http(orgs["provider"].token).post("/v1/datasets", content=b"{" + b" " * (2 << 20) + b"}")
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.slow
def test_no_route_returns_rows_to_anyone_but_their_subject(
    orgs: dict[str, OrgHandle], tax: DatasetPublic, http: Callable[..., httpx.Client]
) -> None:
    """Plant sentinels in an upload, then call every route as every other organisation and scan the answers."""
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    ds_id = tax.id
    leaks = []
    calls = 0
    for name, org in orgs.items():
        if name == "owner":
            continue
        client = http(org.token)
        for route in routes:
            method = sorted(route.methods)[0]
            if method == "DELETE":
                continue  # destructive; covered elsewhere
            path = (
                route.path.replace("{dataset_id}", ds_id)
                .replace("{org_id}", org.id)
                .replace("{token_id}", org.token_id)
            )
            for index in (
                "0",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "7",
                "8",
                "9",
                "10",
                "11",
                "12",
                "13",
                "14",
                "15",
                "16",
                "17",
                "18",
            ):
                target = path.replace("{index}", index)
                if method == "POST" and "/versions" not in path:
                    r = client.request(method, target, json={})
                else:
                    r = client.request(method, target, params={"limit": 500, "first": 1, "second": 2})
                calls += 1
                body = r.content
                if SENTINEL.encode() in body or str(SENTINEL_AMOUNT).encode() in body or b"SENTINEL" in body:
                    leaks.append(f"{name} {method} {target} → {r.status_code}")
                if "{index}" not in path:
                    break
        assert declared_roles(routes[0]) is not None
    assert calls > 100
    assert leaks == []


def test_an_upload_over_a_limit_is_a_413_naming_the_setting(
    clients: dict[str, Client], tax: DatasetPublic, runtime: Runtime
) -> None:
    runtime.datasets.limits = UploadLimits(rows=5)
    with pytest.raises(PayloadTooLarge) as refused:
        clients["provider"].datasets.upload(tax.id, to_csv(tax_rows(3)), fmt="csv")
    assert refused.value.code == "upload_too_large" and refused.value.status == 413
    assert refused.value.details["setting"] == "PPS_UPLOAD_MAX_ROWS"
    assert len(clients["provider"].datasets.get(tax.id).versions) == 1
