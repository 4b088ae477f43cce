"""A local sandbox: PPS on a temporary SQLite database with synthetic platform data, for notebooks and trials.

>>> sb = start_sandbox(300)                 # the API on 127.0.0.1, a free port, in a background thread
>>> bank = sb.client("Bank A")              # a pps_client.Client with Bank A's token
>>> sb.grant_consents("Bank A", sb.enterprises[:200], purpose="loan_underwriting",
...                   scope={"tax": ["taxable_sales"]}, operations=["psi", "score"])
>>> sb.close()

:func:`start_sandbox` does what an operator and the data providers would do on a new deployment: it
bootstraps a platform operator (the ``pps admin`` way, on the host), then over the HTTP API onboards one
data provider per synthetic dataset, three banks and an auditor, and has each provider upload its dataset
(validated and encrypted at rest). Everything after that is for the caller to do through the public API.

:meth:`Sandbox.grant_consents` plays the enterprises: each is onboarded (on the host, as the operator does)
and then grants consent **itself, over the API, with its own token**, so the ledger reads exactly as it
would if each enterprise had used the subject portal.

This is a development tool: ``environment="development"``, keys in a temporary folder, everything deleted
by :meth:`Sandbox.close`. Nothing here is fit for production data.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from demo.keyring import subject_key
from models.synth import PlatformData, generate
from pps import errors
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role, utcnow
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import shutdown_checker

PROVIDER_NAMES: dict[str, str] = {
    "registry": "Qinghai Market Regulation",
    "tax": "Qinghai Tax Bureau",
    "social_insurance": "Qinghai Social Insurance Fund",
    "utilities": "State Grid Qinghai",
    "procurement": "Qinghai Public Resources Trading Centre",
    "court": "Xining Intermediate Court",
    "penalties": "Qinghai Public Credit Centre",
}
"""Which organisation provides each synthetic dataset (by table name)."""

BANKS = ("Bank A", "Bank B", "Bank C")
AUDITOR = "PBoC Xining audit office"
OPERATOR_NAME = "Qinghai credit platform operator (青信融)"


@dataclass
class Sandbox:
    """A running local PPS with its organisations and data. Close it when done (or use ``with``)."""

    url: str
    """the API's base URL (``http://127.0.0.1:<port>``)"""
    tokens: dict[str, str]
    """organisation name -> API token (the operator, providers, banks, the auditor, consenting enterprises)"""
    orgs: dict[str, dict[str, Any]]
    """organisation name -> its description as the API returned it (``id``, ``role``, ``uscc``)"""
    datasets: dict[str, str]
    """dataset (table) name -> dataset id"""
    data: PlatformData
    """the synthetic platform data that was uploaded (its ``labels`` table stays here: it is the banks' side)"""
    vendor_key: Ed25519PublicKey
    """the simulated enclave vendor's attestation key, which a bank pins out of band"""
    data_dir: Path
    _runtime: Runtime = field(repr=False)
    _stack: ExitStack = field(repr=False)
    _owns_dir: bool = field(default=True, repr=False)
    _closed: bool = field(default=False, repr=False)
    _keys: dict[str, Any] = field(default_factory=dict, repr=False)
    """enterprise name -> its own consent-signing key (kept here, as on the enterprise's device)"""

    def __post_init__(self) -> None:
        atexit.register(self.close)  # a notebook kernel that stops without close() leaves no files behind

    @property
    def enterprises(self) -> list[str]:
        """The USCCs of every enterprise in the platform data, in registry order."""
        return [str(u) for u in self.data.registry.columns["uscc"].tolist()]

    def client(self, name: str, *, timeout: float = 120.0) -> Client:
        """A :class:`pps_client.Client` authenticated as organisation ``name``."""
        if name not in self.tokens:
            raise errors.InvalidInput(
                f"no organisation {name!r} in this sandbox; it has: {', '.join(self.tokens)}"
            )
        return Client(self.url, self.tokens[name], timeout=timeout, subject_key=self._keys.get(name))

    def grant_consents(
        self,
        bank: str,
        subjects: Sequence[str],
        *,
        purpose: str,
        scope: Mapping[str, Sequence[str]],
        operations: Sequence[str],
        valid_days: int = 90,
        max_uses: int | None = None,
        granularity: str | None = None,
    ) -> dict[str, str]:
        """Each enterprise of ``subjects`` grants ``bank`` consent; returns USCC -> consent id.

        ``scope`` maps dataset (table) names to the fields granted; ``granularity`` is what a score may release
        (``decision``, ``grade`` or ``score``; default: the purpose's, as in :mod:`pps.governance.consent`). Enterprises not yet onboarded are onboarded
        first (organisation and token, as the operator); each then grants over the API with its own token.
        """
        if bank not in BANKS:
            raise errors.InvalidInput(f"bank must be one of {', '.join(BANKS)}, got {bank!r}")
        unknown = set(scope) - set(self.datasets)
        if unknown:
            raise errors.InvalidInput(f"unknown datasets in scope: {', '.join(sorted(unknown))}")
        names = self._onboard_enterprises(subjects)
        granted: dict[str, str] = {}
        until = utcnow() + timedelta(days=valid_days)
        for uscc, name in zip(subjects, names, strict=True):
            with Client(self.url, self.tokens[name], subject_key=self._keys[name]) as enterprise:
                consent = enterprise.consents.grant(
                    self.orgs[bank]["id"],
                    purpose=purpose,
                    scope={self.datasets[d]: list(f) for d, f in scope.items()},
                    operations=list(operations),
                    valid_until=until,
                    max_uses=max_uses,
                    granularity=granularity,
                )
            granted[uscc] = consent.id
        return granted

    def _onboard_enterprises(self, subjects: Sequence[str]) -> list[str]:
        """Organisation names of ``subjects``, onboarding (with a token each) those not yet on the platform."""
        by_uscc = {o["uscc"]: n for n, o in self.orgs.items() if o.get("uscc")}
        missing = [u for u in dict.fromkeys(subjects) if u not in by_uscc]
        rt = self._runtime
        with rt.db.transaction() as session:
            for uscc in missing:
                name = f"Enterprise {uscc}"
                org = rt.identity.create_org(session, name=name, role=Role.subject, uscc=uscc, actor=OPERATOR)
                code = rt.identity.issue_enrolment_code(session, org=org, actor=OPERATOR)
                _, issued = rt.identity.redeem_enrolment_code(
                    session, code=code.secret, label="sandbox", ttl=timedelta(days=7)
                )
                self._keys[name] = subject_key(rt, session, uscc)  # the enterprise's own key, enrolled
                self.orgs[name] = {"id": org.id, "name": name, "role": "subject", "uscc": uscc}
                self.tokens[name] = issued.secret
                by_uscc[uscc] = name
        return [by_uscc[u] for u in subjects]

    def close(self) -> None:
        """Stop the server, close the database and delete the sandbox's folder (if it made one). Idempotent;
        also done when the interpreter exits."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._stack.close()
        finally:
            self._runtime.close()
            shutdown_checker()  # the server's isolated ciphertext checker (restarted on demand)
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def start_sandbox(
    n_enterprises: int = 300,
    *,
    seed: int = 2026,
    months: int = 24,
    data_dir: Path | None = None,
) -> Sandbox:
    """Start PPS locally with ``n_enterprises`` synthetic enterprises uploaded by their providers.

    ``data_dir``: where the database, keys and CSV files go (default: a new temporary folder, deleted on
    :meth:`Sandbox.close`; a given folder is kept). Takes a few seconds for a few hundred enterprises.
    """
    from api.app import create_app
    from api.live import running_server

    if not 1 <= n_enterprises <= 100_000:
        raise errors.InvalidInput(f"n_enterprises must be in [1, 100000], got {n_enterprises}")
    owns_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="pps-sandbox-")) if data_dir is None else Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        _env_file=None,  # whatever PPS_* says, a sandbox never touches a configured deployment
        data_dir=root,
        database_url=f"sqlite:///{(root / 'pps.db').as_posix()}",
        key_dir=root / "keys",
        environment="development",
        checkpoint_interval_seconds=0,
        psi_workers=1,  # small sets: prepare PSI in-process, no worker processes
        unsafe_small_paillier_keys=True,  # the notebooks train with 1024-bit keys to stay short
    )
    rt = Runtime.build(settings)
    stack = ExitStack()
    try:
        with rt.db.transaction() as session:
            admin_org = rt.identity.create_org(
                session, name=OPERATOR_NAME, role=Role.platform_admin, uscc=None, actor=OPERATOR
            )
            admin_token = rt.identity.issue_token(
                session, org=admin_org, label="sandbox", ttl=timedelta(days=7), actor=OPERATOR
            ).secret
        url = stack.enter_context(running_server(create_app(runtime=rt)))
        data = generate(n_enterprises, seed, months=months)
        tokens = {OPERATOR_NAME: admin_token}
        orgs: dict[str, dict[str, Any]] = {}
        datasets: dict[str, str] = {}
        with Client(url, admin_token) as admin:
            orgs[OPERATOR_NAME] = admin.me().org.model_dump(mode="json")
            plan = [(PROVIDER_NAMES[t.name], "data_provider") for t in data.provider_tables()]
            plan += [(b, "bank") for b in BANKS] + [(AUDITOR, "auditor")]
            for name, role in plan:
                org = admin.orgs.create(name, role)
                orgs[name] = org.model_dump(mode="json", exclude={"enrolment_code"})
                # each organisation redeems its own one-time code: the operator never mints a bank's token
                tokens[name] = Client(url).orgs.enrol(org.enrolment_code, label="sandbox").token.token
        csv_dir = root / "synth"
        for table in data.provider_tables():
            table.write_csv(csv_dir)
            with Client(url, tokens[PROVIDER_NAMES[table.name]], timeout=300) as provider:
                ds = provider.datasets.create(table.name, table.schema, description=f"synthetic {table.name}")
                provider.datasets.upload(ds.id, (csv_dir / f"{table.name}.csv").read_bytes(), fmt="csv")
            datasets[table.name] = ds.id
    except BaseException:
        stack.close()
        rt.close()
        if owns_dir:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return Sandbox(
        url=url,
        tokens=tokens,
        orgs=orgs,
        datasets=datasets,
        data=data,
        vendor_key=rt.enclave.vendor_public_key,
        data_dir=root,
        _runtime=rt,
        _stack=stack,
        _owns_dir=owns_dir,
    )


__all__ = ["AUDITOR", "BANKS", "PROVIDER_NAMES", "Sandbox", "start_sandbox"]
