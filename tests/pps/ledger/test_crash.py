"""A process that dies between an access and its commit leaves neither the access nor its ledger entry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import func, select

from pps.infra.settings import Settings
from pps.infra.storage.tables import Organization
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime

pytestmark = [pytest.mark.db, pytest.mark.slow]

CHILD = textwrap.dedent(
    """
    import os, sys
    from pps.ledger.entry import OPERATOR
    from pps.runtime import Runtime
    from pps.infra.settings import Settings
    from pps.infra.storage.tables import Role

    rt = Runtime.build(Settings(data_dir=sys.argv[1], database_url=sys.argv[2], checkpoint_interval_seconds=0))
    with rt.db.transaction() as session:
        rt.identity.create_org(session, name="Doomed bank", role=Role.bank, uscc=None, actor=OPERATOR)
        session.flush()
        print("access and entry written, not committed", flush=True)
        os._exit(137)  # the process dies here, as in a power cut or an OOM kill
    """
)


def test_killed_process_leaves_neither(runtime: Runtime, settings: Settings) -> None:
    with runtime.db.transaction(write=False) as s:
        size_before = runtime.ledger.size(s)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(settings.data_dir), settings.resolved_database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
        },
    )
    assert proc.returncode == 137, proc.stderr
    assert "not committed" in proc.stdout
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(func.count()).select_from(Organization)).scalar_one() == 0
        assert runtime.ledger.size(s) == size_before
        verify_ledger(s, runtime.ledger)
