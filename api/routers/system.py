"""Health and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import PUBLIC, RuntimeDep
from pps.infra import keyring
from pps.infra.storage import migrate

router = APIRouter(tags=["system"])


@router.get("/healthz", dependencies=[PUBLIC], summary="the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    dependencies=[PUBLIC],
    summary="the database answers, its schema is current, every key-encryption key the data needs opens, and "
    "governed state (consents, budgets, objections) agrees with the ledger",
)
def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with rt.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        checks["schema"] = "ok" if migrate.is_up_to_date(rt.db.engine) else "needs `pps db upgrade`"
        with rt.db.transaction(write=False) as session:
            problems = keyring.problems(session, rt.kms, rt.key_holders)
        checks["keys"] = "; ".join(problems) if problems else "ok"
        # consents, budgets and objections against the ledger (the last check's finding; start-up and periodic)
        checks["state"] = rt.state_status()
    except Exception as exc:  # readiness reports, it does not raise
        checks.setdefault("database", f"unreachable: {type(exc).__name__}")
        checks.setdefault("keys", f"not checked: {type(exc).__name__}")
        checks.setdefault("state", f"not checked: {type(exc).__name__}")
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
