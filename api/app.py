"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

import pps
from api import errors, openapi, web
from api.deps import declared_roles
from api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware, StrictJSONMiddleware
from api.routers import (
    aggregates,
    audit,
    consent,
    datasets,
    enclave,
    identity,
    jobs,
    persons,
    psi,
    scoring,
    system,
)
from api.routers import federated as federated_routes
from api.routers import models as model_routes
from api.routers import objections as objection_routes
from api.routers import repairs as repair_routes
from api.routers import reports as report_routes
from api.routers import sealed as sealed_routes
from api.routers import training as training_routes
from pps.infra.settings import Settings, get_settings
from pps.runtime import Runtime
from protocols.lifetime import die_with_parent

log = logging.getLogger("pps.api")


async def _publish_periodically(rt: Runtime, interval: float) -> None:
    """Every ``interval`` seconds: publish a checkpoint if the ledger has grown; purge expired job results."""

    def publish_if_grown() -> None:
        with rt.db.transaction() as session:
            purged = rt.jobs.purge_expired(session)
        if purged:
            log.info("purged the results of %d expired job(s)", purged)
        with rt.db.transaction(write=False) as session:
            latest = rt.ledger.latest_checkpoint(session)
            if latest is not None and latest.tree_size == rt.ledger.size(session):
                return
        with rt.db.transaction() as session:
            cp = rt.ledger.publish_checkpoint(session)
        log.info("published checkpoint at tree size %d", cp.tree_size)

    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(publish_if_grown)
        except Exception:  # keep publishing on the next tick
            log.exception("periodic checkpoint failed")


async def _recover_periodically(rt: Runtime, interval: float) -> None:
    """Every ``interval`` seconds: fail the trainings of API workers that died meanwhile and abort abandoned
    federations (:func:`pps.infra.recovery.recover_long_lived`)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(rt.recover_long_lived)
        except Exception:  # try again on the next tick
            log.exception("periodic recovery failed")


async def _check_state_periodically(rt: Runtime, interval: float) -> None:
    """Every ``interval`` seconds: replay the ledger's new entries and compare governed state with its rows
    (:meth:`pps.runtime.Runtime.check_state`); divergent consents and budgets are refused until reconciled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(rt.check_state)
        except Exception:  # try again on the next tick
            log.exception("periodic state check failed")


async def _flush_reads_periodically(rt: Runtime, interval: float) -> None:
    """Every ``interval`` seconds: write the hot reads noted since the last flush (:mod:`pps.ledger.reads`)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(rt.reads.flush)
        except Exception as exc:  # kept, and written on the next tick (e.g. SQLite busy with a long write)
            log.warning("writing noted reads failed (%s); kept for the next flush", type(exc).__name__)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the API. ``runtime`` lets tests share one runtime between the app and direct calls."""
    rt = runtime or Runtime.build(settings or get_settings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        interrupted, requeued = await run_in_threadpool(rt.jobs.recover)
        if interrupted or requeued:
            log.warning("jobs after restart: %d interrupted (failed), %d queued again", interrupted, requeued)
        await run_in_threadpool(rt.recover_long_lived)  # trainings and federations: every one terminal
        try:  # governed state against the ledger: what differs is refused, and /readyz says so
            await run_in_threadpool(rt.check_state)
        except Exception:  # e.g. a schema not yet upgraded: /readyz reports it and the next tick tries again
            log.exception("start-up state check failed")
        tasks = []
        if rt.settings.checkpoint_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_publish_periodically(rt, rt.settings.checkpoint_interval_seconds))
            )
        if rt.settings.recovery_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_recover_periodically(rt, rt.settings.recovery_interval_seconds))
            )
        if rt.settings.state_check_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_check_state_periodically(rt, rt.settings.state_check_interval_seconds))
            )
        if rt.settings.read_flush_seconds > 0:
            tasks.append(asyncio.create_task(_flush_reads_periodically(rt, rt.settings.read_flush_seconds)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                await run_in_threadpool(rt.reads.flush)
            except Exception:
                log.exception("writing noted reads at shutdown failed")

    app = FastAPIOffline(  # /docs and /redoc with their scripts served here, not from a CDN
        title="PPS data safe-room",
        version=pps.__version__,
        description="Consent-bound privacy-preserving computation over enterprise data, with a verifiable "
        "audit ledger. Authenticate with `Authorization: Bearer pps_...`.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    errors.install(app)
    # added innermost first: request id (outermost) → body limit → strict JSON → unhandled errors → the routes
    app.add_middleware(errors.UnhandledErrorMiddleware)
    app.add_middleware(StrictJSONMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=rt.settings.max_body_bytes,
        overrides={
            datasets.UPLOAD_PATH: rt.settings.max_upload_bytes,
            "/v1/psi": rt.settings.max_upload_bytes,
            scoring.SCORING_PATH: rt.settings.max_scoring_body_bytes,
            enclave.JOBS_PATH: rt.settings.max_upload_bytes,
            sealed_routes.UPLOAD_PATH: rt.settings.max_upload_bytes,
            sealed_routes.SCORING_PATH: rt.settings.max_upload_bytes,
            objection_routes.OBJECTIONS_PATH: objection_routes.body_limit(
                rt.settings.objection_evidence_max_bytes
            ),
            repair_routes.REPAIRS_PATH: repair_routes.body_limit(rt.settings.repair_proof_max_bytes),
        },
    )
    app.add_middleware(RequestIdMiddleware)
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                _declare_roles(route)
        app.include_router(router)
    web.install(app)  # the role pages under /ui: not API routes, guarded by the API routes they call
    openapi.document(app)
    return app


SERVER_PID_ENV = "PPS_SERVER_PID"
"""Set by ``pps serve`` to its own pid: a uvicorn worker process that reads it dies with the server."""


def create_served_app() -> FastAPI:
    """The factory ``pps serve`` gives uvicorn. With several workers each is a child of uvicorn's supervisor
    (the ``pps serve`` process): it asks to be killed when that process dies, even by SIGKILL, so that no
    worker keeps serving on an orphaned socket (:mod:`protocols.lifetime`)."""
    server = os.environ.get(SERVER_PID_ENV, "")
    if server.isdigit() and int(server) != os.getpid():
        die_with_parent(int(server))
    return create_app()


ROUTERS: tuple[APIRouter, ...] = (
    system.router,
    identity.router,
    audit.router,
    datasets.router,
    consent.router,
    persons.router,
    jobs.router,
    psi.router,
    aggregates.router,
    scoring.router,
    enclave.router,
    objection_routes.router,
    repair_routes.router,
    model_routes.router,
    training_routes.router,
    federated_routes.router,
    sealed_routes.router,
    report_routes.router,
)
"""Every router of the API. Each route must declare exactly one guard (see ``api.deps``)."""


def _declare_roles(route: APIRoute) -> None:
    roles = declared_roles(route)
    if roles is None:
        raise RuntimeError(f"route {sorted(route.methods or ())} {route.path} must declare exactly one guard")
    extra = dict(route.openapi_extra or {})
    extra["x-pps-roles"] = sorted(r.value for r in roles) or ["public"]
    route.openapi_extra = extra
