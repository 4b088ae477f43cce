"""Exact integer columns of sealed datasets: the enclave's BFV key pair next to its CKKS one.

Exactness is checked on the enclave's own operation run in this process (:class:`SealedHE` with a stub platform)
with its Laplace draws replaced by the identity: the test hook replaces two module functions in the test's
process only and leaves the interface (``he_aggregate``: result-shaped ciphertexts in, noisy aggregates out) as
it is. The real enclave process always adds the noise; the end-to-end tests check the noise and the refusals.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

import enclave_sim.sealed as es
from enclave_sim.errors import EnclaveProtocolError, OutputPolicyViolation, ProvisioningError, SealingError
from enclave_sim.host import EnclaveHost
from enclave_sim.platform import expected_measurement
from pps.infra.storage.tables import LedgerEntry, Role, SealedContext, SealedDataset
from pps.runtime import Runtime
from pps_client import APIError, Client, encrypt_sealed_columns, encrypt_sealed_integer_columns
from pps_wire.quote import standard_policy, verify_quote
from pps_wire.sealed import report_nonce
from tests.conftest import OrgFactory
from tests.pps.services.sealed.test_sealed_service import BOUNDS, PURPOSE, N, _consent, _data, _state

PARAMS = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60], "scale_bits": 40}
SLOTS = 4096
T40 = 1099511480321  # the 40-bit batching prime for N = 8192 (t = 1 mod 16384)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class _Platform:
    measurement: bytes
    seal_key: bytes


def _no_provisioning(*_: Any) -> Any:
    raise AssertionError("not used here")


@pytest.fixture(scope="module")
def inproc() -> dict[str, Any]:
    """The enclave's sealed-HE operations in this process, with fresh keys."""
    he = es.SealedHE(_Platform(os.urandom(32), os.urandom(32)), lambda rd: rd, _no_provisioning)
    ops = he.ops()
    got = ops["he_keygen"]({"params": PARAMS})
    return {
        "ops": ops,
        "id": got["context_id"],
        "bfv_id": got["bfv_context_id"],
        "plain_modulus": got["plain_modulus"],
        "ckks_pub": base64.b64decode(got["public_context"]),
        "bfv_pub": base64.b64decode(got["bfv_public_context"]),
        "ckks_eval": ts.context_from(base64.b64decode(got["eval_context"])),
        "bfv_eval": ts.context_from(base64.b64decode(got["bfv_eval_context"])),
    }


def _masked_sum(ctx: ts.Context, blobs: list[bytes], mask: np.ndarray[Any, Any], exact: bool) -> bytes:
    """What the host does (``SealedService.aggregate``): per block mask x column, added, rotate-and-sum."""
    load = ts.bfv_vector_from if exact else ts.ckks_vector_from
    total = None
    for b, blob in enumerate(blobs):
        m = mask[b * SLOTS : (b + 1) * SLOTS]
        m = np.pad(m, (0, SLOTS - m.size))
        term = load(ctx, blob) * (m.astype(np.int64) if exact else m.astype(float)).tolist()
        total = term if total is None else total + term
    assert total is not None
    out: bytes = total.sum().serialize()
    return out


def _item(ct: bytes, count: int, lower: float, upper: float, scheme: str) -> dict[str, Any]:
    return {
        "name": "x",
        "ciphertext": b64(ct),
        "count": count,
        "lower": lower,
        "upper": upper,
        "scheme": scheme,
    }


def _agg(k: dict[str, Any], item: dict[str, Any], epsilon: float = 1.0) -> dict[str, Any]:
    got: dict[str, Any] = k["ops"]["he_aggregate"](
        {"context_id": k["id"], "epsilon": epsilon, "min_cohort": 10, "items": [item]}
    )
    return dict(got["results"]["x"])


# --- parameters --------------------------------------------------------------------------------------------


def test_the_bfv_pair_is_public_batching_and_big_enough(inproc: dict[str, Any]) -> None:
    assert inproc["plain_modulus"] == T40 and T40 % (2 * 8192) == 1
    assert es.plain_modulus_of(inproc["bfv_eval"]) == T40
    pub = ts.context_from(inproc["bfv_pub"])
    assert pub.is_public() and not pub.has_secret_key() and not inproc["bfv_eval"].has_secret_key()
    with pytest.raises(ValueError, match="secret"):
        ts.bfv_vector(pub, [1, 2, 3]).decrypt()
    # 200,000 subjects (the most a sealed dataset holds) x values up to 2.7 million sum without wrapping
    assert (T40 - 1) // 2 > 200_000 * 2_700_000


# --- exactness ----------------------------------------------------------------------------------------------


def test_an_integer_sum_is_exact_before_noise_where_ckks_is_approximate(
    inproc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(es, "laplace_int", lambda value, scale: int(value))  # the test hook: no noise here
    monkeypatch.setattr(es, "laplace_float", lambda value, scale: float(value))
    rng = np.random.default_rng(11)
    n = 6000  # two blocks
    months = rng.integers(-50, 1_000_000, n)  # large enough that CKKS's 2^-40 scale shows its error
    mask = rng.uniform(0, 1, n) < 0.6
    true = int(months[mask].sum())
    bfv = encrypt_sealed_integer_columns(inproc["bfv_pub"], {"m": months.tolist()}, {"m": (-50, 1_000_000)})[
        "m"
    ]
    ckks = encrypt_sealed_columns(inproc["ckks_pub"], {"m": months.astype(float)}, {"m": (-50.0, 1e6)})["m"]
    exact = _agg(
        inproc, _item(_masked_sum(inproc["bfv_eval"], bfv, mask, True), int(mask.sum()), -50, 1e6, "bfv")
    )
    approx = _agg(
        inproc, _item(_masked_sum(inproc["ckks_eval"], ckks, mask, False), int(mask.sum()), -50, 1e6, "ckks")
    )
    assert exact["scheme"] == "bfv" and isinstance(exact["sum"], int)
    assert exact["sum"] == true and exact["count"] == int(mask.sum())  # exact, to the unit
    assert approx["sum"] == pytest.approx(true, rel=1e-6) and approx["sum"] != true  # CKKS: close, not exact


def test_the_enclave_noises_an_integer_sum_with_integers(inproc: dict[str, Any]) -> None:
    x = np.arange(SLOTS) % 7
    mask = np.ones(SLOTS, dtype=bool)
    blobs = encrypt_sealed_integer_columns(inproc["bfv_pub"], {"x": x.tolist()}, {"x": (0, 6)})["x"]
    got = _agg(inproc, _item(_masked_sum(inproc["bfv_eval"], blobs, mask, True), SLOTS, 0, 6, "bfv"), 0.5)
    assert isinstance(got["sum"], int) and got["sum_scale"] == pytest.approx(6 / 0.25)
    assert abs(got["sum"] - int(x.sum())) < 40 * got["sum_scale"]


# --- the enclave's refusals ---------------------------------------------------------------------------------


def test_the_enclave_refuses_to_decrypt_an_integer_column(inproc: dict[str, Any]) -> None:
    x = np.arange(SLOTS) % 100
    blob = encrypt_sealed_integer_columns(inproc["bfv_pub"], {"x": x.tolist()}, {"x": (0, 99)})["x"][0]
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _agg(inproc, _item(blob, SLOTS, 0, 99, "bfv"))  # the raw column, claimed to be a sum
    masked_blob = (ts.bfv_vector_from(inproc["bfv_eval"], blob) * ([1] * SLOTS)).serialize()
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _agg(inproc, _item(masked_blob, SLOTS, 0, 99, "bfv"))  # masked, not summed
    one = np.zeros(SLOTS, dtype=np.int64)
    one[5] = 42  # a single subject's value: slot 5 holds it, the others 0 -> not uniform
    single = encrypt_sealed_integer_columns(inproc["bfv_pub"], {"x": one.tolist()}, {"x": (0, 99)})["x"][0]
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _agg(inproc, _item(single, SLOTS, 0, 99, "bfv"))


def test_the_enclave_refuses_wrong_schemes_bounds_and_wrapping(inproc: dict[str, Any]) -> None:
    x = np.ones(SLOTS, dtype=np.int64)
    mask = np.ones(SLOTS, dtype=bool)
    bfv_blobs = encrypt_sealed_integer_columns(inproc["bfv_pub"], {"x": x.tolist()}, {"x": (0, 1)})["x"]
    total = _masked_sum(inproc["bfv_eval"], bfv_blobs, mask, True)
    ckks_blobs = encrypt_sealed_columns(inproc["ckks_pub"], {"x": x.astype(float)}, {"x": (0.0, 1.0)})["x"]
    ckks_total = _masked_sum(inproc["ckks_eval"], ckks_blobs, mask, False)
    with pytest.raises(ProvisioningError, match="not a CKKS vector"):
        _agg(inproc, _item(total, SLOTS, 0, 1, "ckks"))  # a BFV sum claimed to be CKKS
    with pytest.raises(ProvisioningError, match="not a BFV vector"):
        _agg(inproc, _item(ckks_total, SLOTS, 0, 1, "bfv"))  # and the other way round
    with pytest.raises(EnclaveProtocolError, match="integer bounds"):
        _agg(inproc, _item(total, SLOTS, 0, 1.5, "bfv"))
    with pytest.raises(OutputPolicyViolation, match="wrap"):
        _agg(inproc, _item(total, SLOTS, 0, 1e12, "bfv"))  # 4096 x 10^12 > (t - 1) / 2
    with pytest.raises(EnclaveProtocolError, match="scheme"):
        _agg(inproc, _item(total, SLOTS, 0, 1, "paillier"))
    with pytest.raises(OutputPolicyViolation, match="below the minimum"):
        _agg(inproc, _item(total, 3, 0, 1, "bfv"))
    other = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193)  # a foreign pair, other parameters
    with pytest.raises(ProvisioningError, match="not a BFV vector"):
        _agg(inproc, _item(ts.bfv_vector(other, [1] * SLOTS).serialize(), SLOTS, 0, 1, "bfv"))


def test_the_provider_refuses_values_that_are_not_bounded_integers(inproc: dict[str, Any]) -> None:
    pub = inproc["bfv_pub"]
    with pytest.raises(ValueError, match="not an integer"):
        encrypt_sealed_integer_columns(pub, {"x": [1, 2.5]}, {"x": (0, 10)})
    with pytest.raises(ValueError, match="outside"):
        encrypt_sealed_integer_columns(pub, {"x": [1, 11]}, {"x": (0, 10)})  # refused, not clipped
    with pytest.raises(ValueError, match="not an integer"):
        encrypt_sealed_integer_columns(pub, {"x": [1, float("nan")]}, {"x": (0, 10)})
    with pytest.raises(ValueError, match="bounds are integers"):
        encrypt_sealed_integer_columns(pub, {"x": [1, 2]}, {"x": (0, 10.5)})
    with pytest.raises(ValueError, match="plain modulus"):
        encrypt_sealed_integer_columns(pub, {"x": [1] * 10}, {"x": (0, 10**11)})  # 10 x 10^11 > t / 2
    with pytest.raises(ValueError, match="public"):
        encrypt_sealed_integer_columns(
            ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=T40).serialize(save_secret_key=True),
            {"x": [1]},
            {"x": (0, 1)},
        )


# --- the real enclave process: quote binding, restart -------------------------------------------------------


@pytest.fixture(scope="module")
def vendor() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def host(vendor: Ed25519PrivateKey) -> Iterator[EnclaveHost]:
    h = EnclaveHost(vendor_key=vendor, platform_secret=os.urandom(32))
    h.start()
    yield h
    h.stop()


@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_the_bfv_pair_survives_a_restart_only_sealed_and_stays_bound(
    host: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    got = host.call("he_keygen", params=PARAMS)
    cid, bid = got["context_id"], got["bfv_context_id"]
    host.start()  # a new instance: the keys are gone from memory
    loaded = host.call(
        "he_load", context_id=cid, sealed=got["sealed"], bfv_context_id=bid, bfv_sealed=got["bfv_sealed"]
    )
    assert loaded == {"context_id": cid, "bfv_context_id": bid}
    nonce = os.urandom(32)
    quote = base64.b64decode(host.call("he_quote", context_id=cid, nonce=b64(nonce))["quote"])
    verify_quote(
        quote,
        standard_policy(measurements=[expected_measurement()], nonce=report_nonce(cid, nonce, bid)),
        vendor_key=vendor.public_key(),
    )
    with pytest.raises(SealingError):  # the sealed BFV key opens only under its own ids
        host.call(
            "he_load", context_id=cid, sealed=got["sealed"], bfv_context_id=cid, bfv_sealed=got["bfv_sealed"]
        )
    # after a restart, an aggregate over the BFV pair decrypts again (with noise: the real enclave)
    pub = base64.b64decode(got["bfv_public_context"])
    evaluation = ts.context_from(base64.b64decode(got["bfv_eval_context"]))
    blobs = encrypt_sealed_integer_columns(pub, {"x": [3] * SLOTS}, {"x": (0, 3)})["x"]
    ct = _masked_sum(evaluation, blobs, np.ones(SLOTS, dtype=bool), True)
    reply = host.call(
        "he_aggregate", context_id=cid, epsilon=1.0, min_cohort=10, items=[_item(ct, SLOTS, 0, 3, "bfv")]
    )["results"]["x"]
    assert isinstance(reply["sum"], int) and abs(reply["sum"] - 3 * SLOTS) < 40 * reply["sum_scale"]


# --- the service, end to end --------------------------------------------------------------------------------


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, base_url: str) -> dict[str, Any]:
    provider = make_org(Role.data_provider, "court")
    bank = make_org(Role.bank, "Bank A")
    admin = make_org(Role.platform_admin, "operator")
    data = _data()
    vendor = runtime.enclave.vendor_public_key
    with Client(base_url, provider.token, timeout=120) as p:
        context = p.sealed.context(vendor_key=vendor)
        up = p.sealed.upload(
            "sealed court",
            context=context,
            subjects=data["subjects"],
            columns={k: v.tolist() for k, v in data["columns"].items()},
            bounds=BOUNDS,
            attributes=data["attributes"],
            integer_columns=["arrears"],
        )
    consented = data["subjects"][:40]
    _consent(runtime, bank.id, up.dataset_id, consented)
    return {
        **data,
        "provider": provider,
        "bank": bank,
        "admin": admin,
        "context": context,
        "dataset_id": up.dataset_id,
        "consented": consented,
        "vendor": vendor,
    }


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_an_integer_column_is_sealed_under_bfv_and_aggregated(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    ctx = world["context"]
    assert ctx.bfv_context_id is not None and ctx.bfv_public_context is not None
    with runtime.db.transaction(write=False) as s:
        sealed = s.get(SealedDataset, world["dataset_id"])
        assert sealed is not None
        cols = json.loads(sealed.columns_json)
    assert cols["arrears"]["type"] == "integer" and cols["sales"]["type"] == "real"
    index = {u: i for i, u in enumerate(world["subjects"])}
    cohort = [index[u] for u in world["consented"]]
    arrears = world["columns"]["arrears"]
    calls: list[dict[str, Any]] = []
    real_call = runtime.sealed._call

    def spy(host: Any, op: str, **fields: Any) -> dict[str, Any]:
        if op == "he_aggregate":
            calls.append(fields)
        return real_call(host, op, **fields)

    runtime.sealed._call = spy  # type: ignore[method-assign]
    try:
        with Client(base_url, world["bank"].token, timeout=120) as bank:
            got = bank.sealed.aggregate(
                purpose=PURPOSE, dataset_id=world["dataset_id"], column="arrears", epsilon=1.0
            )
    finally:
        runtime.sealed._call = real_call  # type: ignore[method-assign]
    assert got.exact is True and isinstance(got.sum, int)
    assert abs(got.sum - int(arrears[cohort].sum())) < 25 * got.noise.sum
    assert calls and calls[0]["items"][0]["scheme"] == "bfv"  # the host sent a BFV sum to the enclave


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_scoring_refuses_an_integer_column(runtime: Runtime, base_url: str, world: dict[str, Any]) -> None:
    with (
        Client(base_url, world["bank"].token, timeout=120) as bank,
        pytest.raises(APIError, match="integer") as exc,
    ):
        bank.sealed.score(
            vendor_key=world["vendor"],
            purpose=PURPOSE,
            dataset_id=world["dataset_id"],
            subjects=world["consented"][:12],
            weights={"sales": 0.01, "arrears": -0.2},
        )
    assert exc.value.code == "invalid_input"


def _body(
    world: dict[str, Any], blocks: list[bytes], *, type_: str = "integer", **col: Any
) -> dict[str, Any]:
    return {
        "name": "bad " + os.urandom(4).hex(),
        "context_id": world["context"].context_id,
        "subjects": world["subjects"],
        "attributes": {},
        "columns": {
            "arrears": {
                "lower": col.get("lower", 0),
                "upper": col.get("upper", 10),
                "type": type_,
                "blocks": [b64(b) for b in blocks],
            }
        },
    }


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_bad_integer_uploads_are_refused_before_storage(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    ctx = world["context"]
    good = encrypt_sealed_integer_columns(ctx.bfv_public_context, {"a": [1] * N}, {"a": (0, 10)})["a"]
    ckks = encrypt_sealed_columns(ctx.public_context, {"a": [1.0] * N}, {"a": (0.0, 10.0)})["a"]
    foreign = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193)  # a pair not the enclave's
    n16k = ts.context(
        ts.SCHEME_TYPE.BFV, 16384, plain_modulus=sealapi.PlainModulus.Batching(16384, 40).value()
    )
    cases = {
        "stale context id": ({**_body(world, good), "context_id": os.urandom(32).hex()}, "stale_context"),
        "CKKS vector declared integer": (_body(world, ckks), "invalid_sealed_data"),
        "BFV vector declared real": (
            _body(world, good, type_="real", lower=0.0, upper=10.0),
            "invalid_sealed_data",
        ),
        "foreign BFV parameters": (
            _body(world, [ts.bfv_vector(foreign, [1] * SLOTS).serialize()]),
            "invalid_sealed_data",
        ),
        "wrong degree": (_body(world, [ts.bfv_vector(n16k, [1] * SLOTS).serialize()]), "invalid_sealed_data"),
        "wrong size": (
            _body(world, [ts.bfv_vector(ts.context_from(ctx.bfv_public_context), [1] * 10).serialize()]),
            "invalid_sealed_data",
        ),
        "garbage": (_body(world, [os.urandom(3000)]), "invalid_sealed_data"),
        "non-integer bounds": (_body(world, good, upper=10.5), "invalid_sealed_data"),
        "bounds that could wrap": (_body(world, good, upper=10**11), "invalid_sealed_data"),
    }
    before = _state(runtime)
    with Client(base_url, world["provider"].token, timeout=120) as p:
        for name, (body, code) in cases.items():
            with pytest.raises(APIError) as exc:
                p.request("POST", "/v1/sealed/datasets", json=body)
            assert exc.value.code == code, (name, exc.value.code, str(exc.value))
            assert _state(runtime) == before, name


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_rotation_rotates_both_pairs(runtime: Runtime, base_url: str, world: dict[str, Any]) -> None:
    old = world["context"]
    with Client(base_url, world["admin"].token, timeout=120) as admin:
        rotated = admin.sealed.rotate()
    assert rotated.retired == old.context_id and rotated.needs_reupload == [world["dataset_id"]]
    with runtime.db.transaction(write=False) as s:
        new_row = s.get(SealedContext, rotated.context_id)
        old_row = s.get(SealedContext, old.context_id)
        assert new_row is not None and old_row is not None
        assert old_row.state == "retired" and old_row.bfv_context_id == old.bfv_context_id
        assert new_row.bfv_context_id not in (None, old.bfv_context_id)
        keygens = [
            json.loads(e)
            for e in s.execute(select(LedgerEntry.entry).order_by(LedgerEntry.idx)).scalars()
            if json.loads(e)["action"] == "sealed.keygen"
        ]
    assert keygens[-1]["detail"]["bfv_context_id"] == new_row.bfv_context_id
    before = _state(runtime)
    stale = encrypt_sealed_integer_columns(old.bfv_public_context, {"a": [1] * N}, {"a": (0, 10)})["a"]
    with Client(base_url, world["provider"].token, timeout=120) as p:
        with pytest.raises(APIError) as exc:  # the old pair is refused after rotation
            p.request("POST", "/v1/sealed/datasets", json=_body(world, stale))
        assert exc.value.code == "stale_context" and _state(runtime) == before
        fresh = p.sealed.context(vendor_key=world["vendor"])  # the quote binds the new pair of ids
        assert (fresh.context_id, fresh.bfv_context_id) == (
            rotated.context_id,
            new_row.bfv_context_id,
        )
        again = p.sealed.upload(
            "sealed court v2",
            context=fresh,
            subjects=world["subjects"],
            columns={"arrears": world["columns"]["arrears"].tolist()},
            bounds=BOUNDS,
            integer_columns=["arrears"],
        )
    assert again.context_id == rotated.context_id and again.state == "ready"
