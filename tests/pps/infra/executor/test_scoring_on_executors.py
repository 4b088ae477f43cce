"""Encrypted scoring fanned out on each backend: real CKKS ciphertexts, checked in every worker, decrypted by
the bank; and the whole service (admission, release, ledger) with the runtime's executor chosen by settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pps.services.scoring as scoring
from pps.infra.executor import Executor, LocalExecutor, RayExecutor, Shared
from pps.infra.settings import Settings
from pps.infra.storage.tables import Consent, Job
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import BankScoringKey, ForeignCiphertext, check_public_context, load_model
from tests.pps.services.scoring.conftest import PURPOSE, World, plaintext_logits

pytestmark = pytest.mark.slow

FEATURES = ("log_sales_mean_last6", "tax_filing_ratio", "company_age_years")


@pytest.fixture(scope="module")
def key() -> BankScoringKey:
    return BankScoringKey.create()


def test_a_multi_chunk_job_scores_every_row_once_in_order(
    executor: Executor, key: BankScoringKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "BLOCKS_PER_CHUNK", 1)  # one result ciphertext per chunk: 4 chunks
    weights = {"a": 0.5, "b": -1.25, "c": 2.0}
    message = key.encrypt_model(weights, 0.75)
    context = check_public_context(key.public_context_bytes())
    model = load_model(context, message)
    per = 2 * context.slots
    x = np.random.default_rng(7).normal(size=(3 * per + 123, 3))
    progress: list[tuple[int, int]] = []
    result = scoring.evaluate_in_chunks(
        executor,
        context,
        model,
        x,
        noise_std=0.0,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    assert len(result.ciphertexts) == 4 and result.n_subjects == x.shape[0]
    assert progress[-1] == (4, 4) and len(progress) == 4
    raw = key.decrypt_scores(result, model=message).raw
    assert np.max(np.abs(raw - (0.75 + x @ np.array(list(weights.values()))))) < 1e-3


def test_a_worker_checks_the_context_and_model_again(executor: Executor, key: BankScoringKey) -> None:
    """What a worker receives is checked there again: a model bound to another context fails the job with the
    checker's own error, wherever the worker runs."""
    context = check_public_context(key.public_context_bytes())
    message = load_model(context, key.encrypt_model({"a": 1.0}, 0.0)).message
    foreign = scoring._ScoringPayload(
        BankScoringKey.create().public_context_bytes(), message, 0.0, scoring.DEFAULT_LIMITS
    )
    shared = Shared("foreign", foreign, scoring._build_scoring_state)
    with pytest.raises(ForeignCiphertext, match="another context"):
        list(executor.map_chunks(scoring.score_chunk, [np.zeros((4, 1))], shared=shared))


@pytest.fixture(params=["pool", pytest.param("ray", marks=pytest.mark.e2e)])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """The runtime's settings with the executor under test (PPS_EXECUTOR, PPS_EXECUTOR_WORKERS)."""
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        environment="test",
        unsafe_unapproved_models=True,  # measures the HE path itself, with a bank-encrypted model
        secret_key="test-secret-key-that-is-long-enough-0123456789",
        checkpoint_interval_seconds=0,
        psi_workers=1,
        executor="ray" if request.param == "ray" else "local",
        executor_workers=2,
    )


def test_the_service_scores_through_the_executor_chosen_by_settings(
    runtime: Runtime, world: World, base_url: str, key: BankScoringKey, settings: Settings
) -> None:
    expected_type = RayExecutor if settings.executor == "ray" else LocalExecutor
    assert isinstance(runtime.scoring.executor, expected_type) and not runtime.scoring.executor.in_process
    assert runtime.psi.cache.executor is runtime.executor
    weights = dict(zip(FEATURES, (0.4, -0.8, 0.3), strict=True))
    model = key.encrypt_model(weights, -1.0)
    asked = world.consented[:20] + world.revoked
    result = Client(base_url, world.bank.token).scoring.score(key, model, purpose=PURPOSE, subjects=asked)
    assert result.subjects == world.consented[:20]
    expected = plaintext_logits(runtime, result.subjects, weights, -1.0, {})
    assert np.max(np.abs(result.raw - expected)) < 1e-3
    with runtime.db.transaction(write=False) as s:
        job = s.query(Job).filter(Job.kind == "score").one()
        assert (job.progress_done, job.progress_total) == (1, 1)  # one chunk, reported done
        used = {c.subject_uscc: c.uses for c in s.query(Consent)}
    assert all(used[u] == 1 for u in world.consented[:20])  # released (and spent) once, by the coordinator
    assert all(used[u] == 0 for u in world.consented[20:])


def test_psi_setup_shards_run_on_the_executor(executor: Executor) -> None:
    from pps.identity.uscc import validate_uscc
    from pps.services.psi_cache import SetupCache
    from protocols.psi import PSIParams, ServerSet, run_locally
    from tests.helpers import uscc_for

    items = [uscc_for(i) for i in range(1, 401)]
    cache = SetupCache(executor=executor)
    setup, _ = cache.get_or_prepare("bank", PURPOSE, ServerSet.of(items), PSIParams())
    assert setup.shard_count == min(executor.workers, len(items))
    result, _ = run_locally(
        [*items[:25], uscc_for(900_001)], setup, normalise=validate_uscc, reveal_intersection=True
    )
    assert sorted(result.intersection) == sorted(items[:25])
