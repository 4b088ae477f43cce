"""The client SDK: talk to a PPS service over HTTP and verify what it says.

>>> client = PPSClient("http://127.0.0.1:8000", token="pps_...")
>>> me = client.me()

Errors come back as the same :class:`~pps.errors.PPSError` subclasses the server raised (matched by their
``code``), so callers can ``except TokenExpired``. Ledger answers are verified *on the client* with
:meth:`PPSClient.verify_proven_entry` and :meth:`PPSClient.verify_consistency`, against a verifier key the
caller pins (fetch it once with :meth:`PPSClient.public_key` and keep it).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from pps import errors
from pps.ledger import merkle
from pps.ledger.checkpoint import Checkpoint, NoteVerifier, verify_checkpoint


def _all_error_classes() -> dict[str, type[errors.PPSError]]:
    found: dict[str, type[errors.PPSError]] = {}
    stack: list[type[errors.PPSError]] = [errors.PPSError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


_BY_CODE = _all_error_classes()


class RemoteError(errors.PPSError):
    """An error whose code this client does not know (a newer server, or a proxy in between)."""

    def __init__(self, code: str, message: str, status: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code
        self.status = status


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()["error"]
        code, message, details = body["code"], body["message"], body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f"http_{response.status_code}", response.text[:500], response.status_code) from None
    cls = _BY_CODE.get(code)
    if cls is None or cls is errors.LedgerIntegrityError:
        raise RemoteError(code, message, response.status_code, details)
    err = cls.__new__(cls)  # subclasses may have richer constructors; the base one is what the wire carries
    errors.PPSError.__init__(err, message, details=details)
    err.status = response.status_code  # type: ignore[attr-defined]
    raise err


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class ScoringResult:
    """A decrypted scoring result: one score per scored subject, and who was not scored and why."""

    subjects: list[str]
    raw: Any
    """numpy array: logits (logistic) or points (scorecard), in the order of ``subjects``; None if none"""
    probabilities: Any
    """numpy array of sigmoid(raw) for a logistic model, else None"""
    not_scored: list[dict[str, str]]
    """``{"subject", "reason", "detail"}`` per subject not scored"""
    header: dict[str, Any]

    @property
    def disputed(self) -> list[dict[str, Any]]:
        """``{"subject", "dataset", "fields"}`` for scored subjects with open objections on inputs the model
        read (the values are as the provider holds them; the subject disputes them)."""
        found: list[dict[str, Any]] = self.header.get("disputed", [])
        return found

    def as_dict(self) -> dict[str, float]:
        """subject -> probability (logistic) or points (scorecard)."""
        values = self.probabilities if self.probabilities is not None else self.raw
        if values is None:
            return {}
        return {s: float(v) for s, v in zip(self.subjects, values, strict=True)}


class PPSClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PPSClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # --- identity ------------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/me")
        return result

    def create_org(self, name: str, role: str, uscc: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role}
        if uscc is not None:
            body["uscc"] = uscc
        result: dict[str, Any] = self.request("POST", "/v1/orgs", json=body)
        return result

    def list_orgs(self, *, role: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """All organisations (following pages)."""
        items: list[dict[str, Any]] = []
        after = None
        while True:
            params = {
                k: v for k, v in {"role": role, "limit": limit, "after": after}.items() if v is not None
            }
            page = self.request("GET", "/v1/orgs", params=params)
            items.extend(page["items"])
            after = page["next_after"]
            if after is None:
                return items

    def get_org(self, org_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/orgs/{org_id}")
        return result

    def disable_org(self, org_id: str, reason: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/orgs/{org_id}/disable", json={"reason": reason})
        return result

    def issue_token(
        self, org_id: str, *, label: str = "default", ttl_days: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"label": label}
        if ttl_days is not None:
            body["ttl_days"] = ttl_days
        result: dict[str, Any] = self.request("POST", f"/v1/orgs/{org_id}/tokens", json=body)
        return result

    def list_tokens(self, org_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/v1/orgs/{org_id}/tokens")
        return result

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/v1/tokens/{token_id}")
        return result

    # --- datasets ------------------------------------------------------------------------------------

    def create_dataset(self, name: str, schema: dict[str, Any], *, description: str = "") -> dict[str, Any]:
        body = {"name": name, "description": description, "schema": schema}
        result: dict[str, Any] = self.request("POST", "/v1/datasets", json=body)
        return result

    def list_datasets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.request("GET", "/v1/datasets", params={"after": after} if after else {})
            items.extend(page["items"])
            after = page["next_after"]
            if after is None:
                return items

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/datasets/{dataset_id}")
        return result

    def upload_version(
        self, dataset_id: str, content: bytes | Iterable[bytes], *, fmt: str, timeout: float = 600.0
    ) -> dict[str, Any]:
        """Upload a new version; ``content`` may be bytes or an iterable of byte chunks (streamed)."""
        media = {
            "csv": "text/csv",
            "ndjson": "application/x-ndjson",
            "parquet": "application/vnd.apache.parquet",
        }
        result: dict[str, Any] = self.request(
            "POST",
            f"/v1/datasets/{dataset_id}/versions",
            params={"format": fmt},
            content=content,
            headers={"content-type": media.get(fmt, "application/octet-stream")},
            timeout=timeout,
        )
        return result

    def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/v1/datasets/{dataset_id}")
        return result

    def lineage(self, dataset_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/v1/datasets/{dataset_id}/lineage", params={"limit": 500}
        )["items"]
        return result

    def catalog(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/catalog")
        return result

    def my_records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/me/records")
        return result

    # --- jobs and PSI --------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}")
        return result

    def wait(self, job_id: str, *, timeout: float = 300.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll a job until it ends; raise the job's error if it failed or was cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == "succeeded":
                return job
            if job["state"] in ("failed", "cancelled"):
                err = job.get("error") or {"code": "job_cancelled", "message": "the job was cancelled"}
                raise RemoteError(err["code"], err["message"], 409, {"job": job_id})
            if time.monotonic() > deadline:
                raise RemoteError("timeout", f"job {job_id} did not finish in {timeout} s", 0)
            time.sleep(poll)

    def job_result(self, job_id: str) -> bytes:
        response = self._http.get(f"/v1/jobs/{job_id}/result")
        _raise_for(response)
        return response.content

    def psi(
        self,
        customers: Iterable[str],
        *,
        purpose: str,
        reveal_intersection: bool = True,
        timeout: float = 300.0,
        operation: str = "psi",
    ) -> Any:
        """Which of ``customers`` consented to this bank for ``purpose`` (or only how many).

        ``operation="train"``: which consented to *training* (row alignment for :meth:`train_vertical`).

        Runs the client half locally: only blinded points leave; the answer is computed here. Returns a
        :class:`protocols.psi.PSIResult`.
        """
        from pps.identity.uscc import validate_uscc
        from pps.services.psi import unpack_result
        from protocols.psi import PSIClient

        client = PSIClient(list(customers), normalise=validate_uscc, reveal_intersection=reveal_intersection)
        body = {
            "purpose": purpose,
            "reveal": "intersection" if reveal_intersection else "size",
            "request": base64.b64encode(client.create_request()).decode(),
            "operation": operation,
        }
        job = self.request("POST", "/v1/psi", json=body)
        self.wait(job["id"], timeout=timeout)
        setup, response = unpack_result(self.job_result(job["id"]))
        return client.finish(setup, response)

    # --- vertical training (pps.vertical_client) -----------------------------------------------------

    def train_vertical(self, **kwargs: Any) -> Any:
        """Train a vertical LR model with the platform's features; see :func:`pps.vertical_client.train_vertical`."""
        from pps.vertical_client import train_vertical

        return train_vertical(self, **kwargs)

    def vertical_scores(self, model_id: str, guest_model: Any, **kwargs: Any) -> Any:
        """Score applicants with both halves; see :func:`pps.vertical_client.vertical_scores`."""
        from pps.vertical_client import vertical_scores

        return vertical_scores(self, model_id, guest_model, **kwargs)

    def models(self) -> list[dict[str, Any]]:
        """My models in the registry (every model for auditors)."""
        result: list[dict[str, Any]] = self.request("GET", "/v1/models")
        return result

    def model(self, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/models/{model_id}")
        return result

    def post_evaluation(self, model_id: str, evaluation: Any) -> dict[str, Any]:
        """Post a held-out :class:`models.metrics.Evaluation` (computed here, where the labels are)."""
        result: dict[str, Any] = self.request(
            "POST", f"/v1/models/{model_id}/evaluation", json={"evaluation": evaluation.to_dict()}
        )
        return result

    def model_report_html(self, model_id: str) -> str:
        text: str = self.request("GET", f"/v1/models/{model_id}/report.html")
        return text

    # --- encrypted scoring ---------------------------------------------------------------------------

    def features(self) -> list[dict[str, Any]]:
        """The platform features a model may read (names, kinds, units, resolution, the fields they read)."""
        result: list[dict[str, Any]] = self.request("GET", "/v1/features")
        return result

    def submit_scoring(
        self,
        key: Any,
        model: Any,
        *,
        purpose: str,
        subjects: Iterable[str] | None = None,
        preprocess: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Queue a scoring job: ``key`` is the bank's :class:`protocols.he_scoring.BankScoringKey` (only its
        public context is sent), ``model`` the encrypted model from ``key.encrypt_model`` /
        ``key.encrypt_scorecard``; ``subjects`` None scores every subject that consented to you."""
        body = {
            "purpose": purpose,
            "subjects": "all_consented" if subjects is None else list(subjects),
            "context": base64.b64encode(key.public_context_bytes()).decode(),
            "model": base64.b64encode(model.to_bytes()).decode(),
            "preprocess": preprocess or {},
        }
        result: dict[str, Any] = self.request("POST", "/v1/scoring", json=body)
        return result

    def scoring_result(self, job_id: str, key: Any, model: Any = None) -> ScoringResult:
        """Fetch a finished scoring job's result and decrypt it with the bank's key."""
        from pps.services.scoring import unpack_result

        header, result = unpack_result(self.job_result(job_id))
        subjects = list(header["subjects"])
        raw: Any = None
        probabilities: Any = None
        if result:
            scores = key.decrypt_scores(result, model=model)
            if len(scores.raw) != len(subjects):
                raise RemoteError(
                    "invalid_result", "the result holds another number of scores than subjects", 0
                )
            raw, probabilities = scores.raw, scores.probabilities
        return ScoringResult(subjects, raw, probabilities, list(header["not_scored"]), header)

    def score(
        self,
        key: Any,
        model: Any,
        *,
        purpose: str,
        subjects: Iterable[str] | None = None,
        preprocess: dict[str, dict[str, Any]] | None = None,
        timeout: float = 600.0,
    ) -> ScoringResult:
        """Score ``subjects`` with an encrypted model and decrypt the answer here: submit, wait, fetch."""
        job = self.submit_scoring(key, model, purpose=purpose, subjects=subjects, preprocess=preprocess)
        self.wait(job["id"], timeout=timeout)
        return self.scoring_result(job["id"], key, model)

    # --- the simulated enclave (issue 6) -------------------------------------------------------------

    def enclave_quote(self, nonce: bytes | None = None) -> dict[str, Any]:
        """A quote of the enclave for ``nonce`` (32 bytes; random if None). Returns the server's answer with
        ``quote`` as bytes and the ``nonce`` used. Verify it with :meth:`verify_quote` before trusting it."""
        import os

        nonce = nonce if nonce is not None else os.urandom(32)
        result: dict[str, Any] = self.request("GET", "/v1/enclave/quote", params={"nonce": nonce.hex()})
        result["quote"] = b64d(result["quote"])
        result["nonce"] = nonce
        return result

    @staticmethod
    def verify_quote(
        quote: bytes,
        *,
        vendor_key: Any,
        nonce: bytes,
        measurements: Iterable[bytes] | None = None,
        min_svn: int = 1,
        registry: Any = None,
    ) -> None:
        """Verify a quote: signed by the pinned ``vendor_key`` (an Ed25519 public key obtained out of band),
        a trusted build (``measurements``; default: the build of the ``enclave_sim`` installed here, i.e. the
        published source), at least ``min_svn``, not debug, answering ``nonce`` (and, with a
        :class:`enclave_sim.quote.NonceRegistry`, never a nonce seen before). Returns nothing or raises
        :class:`~pps.errors.AttestationError`."""
        from enclave_sim import errors as ee
        from enclave_sim.platform import expected_measurement
        from enclave_sim.quote import standard_policy, verify_quote

        trusted = list(measurements) if measurements is not None else [expected_measurement()]
        policy = standard_policy(measurements=trusted, nonce=nonce, min_svn=min_svn, registry=registry)
        try:
            verify_quote(quote, policy, vendor_key=vendor_key)
        except ee.AttestationError as exc:
            raise errors.AttestationError(exc.message, details={"reason": exc.reason}) from None

    def provision_to_enclave(
        self,
        *,
        job: str,
        slot: str,
        body: bytes,
        output: Any,
        vendor_key: Any,
        measurements: Iterable[bytes] | None = None,
    ) -> tuple[bytes, bytes]:
        """Verify a fresh quote of a trusted build (``measurements``; default: the ``enclave_sim`` installed here)
        and encrypt ``body`` and the ``output`` policy to that enclave for ``job``'s ``slot`` (HPKE). Returns
        ``(quote, sealed)``; only that enclave instance can open ``sealed``."""
        from enclave_sim import crypto
        from enclave_sim import errors as ee
        from enclave_sim.platform import expected_measurement
        from enclave_sim.quote import standard_policy

        got = self.enclave_quote()
        quote: bytes = got["quote"]
        self.verify_quote(quote, vendor_key=vendor_key, nonce=got["nonce"], measurements=measurements)
        trusted = list(measurements) if measurements is not None else [expected_measurement()]
        try:
            sealed = crypto.encrypt_for_enclave(
                quote,
                standard_policy(measurements=trusted, nonce=got["nonce"]),
                vendor_key=vendor_key,
                job=job,
                slot=slot,
                body=body,
                output=output,
            )
        except ee.AttestationError as exc:
            raise errors.AttestationError(exc.message, details={"reason": exc.reason}) from None
        return quote, sealed

    def enclave_gbdt(
        self,
        *,
        purpose: str,
        keys: list[str],
        labels: list[int],
        bank_features: dict[str, list[float | None]],
        features: list[str],
        vendor_key: Any,
        release: Iterable[str] = ("metrics",),
        subjects: Iterable[str] | None = None,
        measurements: Iterable[bytes] | None = None,
        params: dict[str, int] | None = None,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """Train gradient-boosted trees in the enclave on this bank's labelled rows (``keys`` are USCCs) joined
        with the platform ``features`` of consented subjects: verify a fresh quote, encrypt the rows and the
        output policy to that enclave, submit, wait, check the release came from the enclave, decrypt.

        Returns ``{"job": <job>, "outputs": {"metrics": ..., "scores": ..., "model": ...}}`` with the outputs
        ``release`` asked for (``metrics`` in the clear; scores and the model encrypted to a key made here).
        """
        import os

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        from enclave_sim import crypto
        from enclave_sim import errors as ee
        from enclave_sim.jobs import table_bytes
        from enclave_sim.quote import Quote

        recipient = X25519PrivateKey.generate()
        wanted = sorted(set(release))
        output = crypto.OutputPolicy(
            tuple(wanted),
            os.urandom(32),
            recipient.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if set(wanted) - {"metrics"}
            else None,
        )
        quote, sealed = self.provision_to_enclave(
            job="gbdt",
            slot="bank",
            body=table_bytes(keys, bank_features, labels),
            output=output,
            vendor_key=vendor_key,
            measurements=measurements,
        )
        body = {
            "job": "gbdt",
            "purpose": purpose,
            "subjects": "all_consented" if subjects is None else list(subjects),
            "features": list(features),
            "quote_hash": Quote.parse(quote).quote_hash.hex(),
            "rows": {
                "enc": base64.b64encode(sealed[: crypto.ENC_BYTES]).decode(),
                "ciphertext": base64.b64encode(sealed[crypto.ENC_BYTES :]).decode(),
            },
            "output": output.public(),
            "params": params or {},
        }
        job = self.request("POST", "/v1/enclave/jobs", json=body)
        done = self.wait(job["id"], timeout=timeout)
        try:
            opened = crypto.open_release(
                self.job_result(job["id"]), result_key=output.result_key, recipient=recipient
            )
        except ee.ProvisioningError as exc:
            raise RemoteError("invalid_result", exc.message, 0) from None
        return {"job": done, "outputs": opened["outputs"], "measurement": opened["measurement"]}

    # --- aggregate queries ---------------------------------------------------------------------------

    # --- sealed datasets (pps.services.sealed) -------------------------------------------------------------------------

    def sealed_context(
        self, *, vendor_key: Any, measurements: Iterable[bytes] | None = None, nonce: bytes | None = None
    ) -> dict[str, Any]:
        """Fetch the enclave's public CKKS context (and BFV context, for exact integer columns) with a quote and
        verify them: each context id is the hash of its context, and the quote (pinned ``vendor_key``, trusted
        build, fresh, not debug) answers a nonce that binds both context ids to a nonce chosen here. Returns
        ``{"context_id", "public_context", "bfv_context_id", "bfv_public_context", "params"}`` (the BFV pair is
        ``None`` for a context made before BFV); raises :class:`~pps.errors.AttestationError` if anything does
        not hold. The verified ``quote`` and the ``report_nonce`` it answers come with it (a bank provisions its
        score request to them)."""
        import hashlib
        import os

        from enclave_sim.sealed import report_nonce

        nonce = nonce if nonce is not None else os.urandom(32)
        got = self.request("GET", "/v1/sealed/context", params={"nonce": nonce.hex()})
        public = b64d(got["public_context"])
        context_id = hashlib.sha256(public).hexdigest()
        if context_id != got["context_id"]:
            raise errors.AttestationError(
                "the context id is not the SHA-256 of the public context", details={"reason": "context"}
            )
        bfv_public = b64d(got["bfv_public_context"]) if got.get("bfv_public_context") is not None else None
        bfv_id = hashlib.sha256(bfv_public).hexdigest() if bfv_public is not None else None
        if bfv_id != got.get("bfv_context_id"):
            raise errors.AttestationError(
                "the BFV context id is not the SHA-256 of the public BFV context",
                details={"reason": "context"},
            )
        quote = b64d(got["quote"])
        bound = report_nonce(context_id, nonce, bfv_id)
        self.verify_quote(quote, vendor_key=vendor_key, nonce=bound, measurements=measurements)
        return {
            "context_id": context_id,
            "public_context": public,
            "bfv_context_id": bfv_id,
            "bfv_public_context": bfv_public,
            "params": got["params"],
            "quote": quote,
            "report_nonce": bound,
        }

    def upload_sealed(
        self,
        name: str,
        *,
        context: dict[str, Any],
        subjects: list[str],
        columns: dict[str, Iterable[float]],
        bounds: dict[str, tuple[float, float]],
        attributes: dict[str, list[str]] | None = None,
        integer_columns: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Encrypt ``columns`` (one value per subject, clipped to ``bounds``) under the verified ``context``
        (from :meth:`sealed_context`) and upload them with the plaintext ``subjects`` and C1 ``attributes``.
        Columns named in ``integer_columns`` (counts, months, case numbers) are encrypted exactly under the BFV
        context instead: their values must already be integers in ``[lower, upper]`` (refused otherwise, not
        clipped), and their sums then come back exact before noise."""
        exact = set(integer_columns)
        unknown = sorted(exact - set(columns))
        if unknown:
            raise errors.InvalidInput(f"integer_columns names columns not given: {unknown}")
        sealed = encrypt_sealed_columns(
            context["public_context"], {c: v for c, v in columns.items() if c not in exact}, bounds
        )
        if exact:
            if context.get("bfv_public_context") is None:
                raise errors.InvalidInput(
                    "this sealed context has no BFV pair for integer columns (the enclave's key predates it)"
                )
            sealed.update(
                encrypt_sealed_integer_columns(
                    context["bfv_public_context"], {c: columns[c] for c in exact}, bounds
                )
            )
        body = {
            "name": name,
            "context_id": context["context_id"],
            "subjects": subjects,
            "attributes": attributes or {},
            "columns": {
                c: {
                    "lower": bounds[c][0],
                    "upper": bounds[c][1],
                    "type": "integer" if c in exact else "real",
                    "blocks": [base64.b64encode(b).decode() for b in blocks],
                }
                for c, blocks in sealed.items()
            },
        }
        result: dict[str, Any] = self.request("POST", "/v1/sealed/datasets", json=body)
        return result

    def sealed_aggregate(
        self,
        *,
        purpose: str,
        dataset_id: str,
        column: str,
        epsilon: float,
        where: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A noisy sum, count and mean of a sealed column over the consented cohort matching ``where`` (for an
        integer column the enclave's sum is exact before the noise: ``"exact": true``)."""
        body = {
            "purpose": purpose,
            "dataset_id": dataset_id,
            "column": column,
            "epsilon": epsilon,
            "where": where or {},
        }
        result: dict[str, Any] = self.request("POST", "/v1/sealed/aggregates", json=body)
        return result

    def sealed_score(
        self,
        *,
        vendor_key: Any,
        purpose: str,
        dataset_id: str,
        subjects: list[str],
        weights: dict[str, float],
        measurements: Iterable[bytes] | None = None,
    ) -> dict[str, Any]:
        """Score ``subjects`` with ``weights`` (column -> weight) over a sealed dataset. Verifies a fresh context
        quote (pinned ``vendor_key``, trusted ``measurements``), encrypts the weights under that context (nobody
        outside the enclave can read them, this bank included) and provisions to that quote its score request:
        a recipient key and a result key made here, bound to the context, the dataset and ``subjects``. The
        enclave releases scores only to that key; the release is checked (it came from the enclave, for this
        query) and decrypted here. Returns ``{"query_id", "scores": {uscc: score}, "not_used"}`` (scores carry
        the enclave's small noise)."""
        import os

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        from enclave_sim import crypto
        from enclave_sim import errors as ee
        from enclave_sim.platform import expected_measurement
        from enclave_sim.quote import Quote, standard_policy
        from enclave_sim.sealed import SCORES_OUTPUT, encrypt_score_request, open_scores

        trusted = list(measurements) if measurements is not None else [expected_measurement()]
        context = self.sealed_context(vendor_key=vendor_key, measurements=trusted)
        encrypted = encrypt_sealed_weights(context["public_context"], weights)
        key = X25519PrivateKey.generate()
        output = crypto.OutputPolicy(
            (SCORES_OUTPUT,),
            os.urandom(32),
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        )
        quote = context["quote"]
        try:
            provision = encrypt_score_request(
                quote,
                standard_policy(measurements=trusted, nonce=context["report_nonce"]),
                vendor_key=vendor_key,
                output=output,
                context_id=context["context_id"],
                dataset_id=dataset_id,
                subjects=subjects,
            )
        except ee.AttestationError as exc:
            raise errors.AttestationError(exc.message, details={"reason": exc.reason}) from None
        quote_hash = Quote.parse(quote).quote_hash
        body = {
            "purpose": purpose,
            "dataset_id": dataset_id,
            "subjects": subjects,
            "weights": {k: base64.b64encode(v).decode() for k, v in encrypted.items()},
            "quote_hash": quote_hash.hex(),
            "provision": base64.b64encode(provision).decode(),
        }
        got = self.request("POST", "/v1/sealed/scoring", json=body)
        try:
            scores = open_scores(
                b64d(got["release"]),
                key,
                result_key=output.result_key,
                quote_hash=quote_hash,
                query_id=got["query_id"],
                dataset_id=dataset_id,
                subjects=subjects,
            )
        except ee.ProvisioningError as exc:
            raise errors.ProvisioningFailed(f"the score release does not open: {exc.message}") from None
        if list(scores) != list(got["subjects"]):
            raise errors.ProvisioningFailed("the server's list of scored subjects is not the enclave's")
        return {"query_id": got["query_id"], "scores": scores, "not_used": got["not_used"]}

    def rotate_sealed_key(self) -> dict[str, Any]:
        """Platform admin: rotate the enclave's HE key (datasets under the old one then need re-upload)."""
        result: dict[str, Any] = self.request("POST", "/v1/sealed/rotate", json={"confirm": True})
        return result

    def aggregate(
        self,
        statistic: str,
        *,
        purpose: str,
        epsilon: float,
        scope: str = "consented",
        dataset: str | None = None,
        field: str | None = None,
        months: tuple[str, str] | None = None,
        cohort: dict[str, list[str]] | None = None,
        group_by: list[str] | None = None,
        bounds: tuple[float, float] | None = None,
        bins: int | None = None,
    ) -> dict[str, Any]:
        """Cohort statistics under output controls (``docs/protocols.md``): count, sum, mean or histogram.

        ``dataset`` is a source name (``tax``, ...) or a dataset id; ``bounds`` clamp each enterprise's
        contribution (required for sum, mean, histogram). Cells below the minimum cohort size are left out;
        refusals raise :class:`~pps.errors.Refused` / :class:`~pps.errors.BudgetExhausted`.
        """
        body: dict[str, Any] = {
            "statistic": statistic,
            "scope": scope,
            "purpose": purpose,
            "epsilon": epsilon,
            "dataset": dataset,
            "field": field,
            "cohort": cohort or {},
            "group_by": group_by or [],
            "bins": bins,
        }
        if months is not None:
            body["months"] = {"from": months[0], "to": months[1]}
        if bounds is not None:
            body["bounds"] = {"lower": bounds[0], "upper": bounds[1]}
        result: dict[str, Any] = self.request("POST", "/v1/aggregates", json=body)
        return result

    def budget(self) -> dict[str, Any]:
        """This bank's privacy budget: total, spent and remaining epsilon."""
        result: dict[str, Any] = self.request("GET", "/v1/aggregates/budget")
        return result

    def set_platform_aggregates(self, dataset_id: str, enabled: bool) -> dict[str, Any]:
        """As the dataset's provider: allow (or stop) platform-wide aggregates over its C2 fields."""
        result: dict[str, Any] = self.request(
            "PATCH", f"/v1/datasets/{dataset_id}/aggregates", json={"platform_aggregates": enabled}
        )
        return result

    # --- objections and corrections (pps.governance.objections) ------------------------------------------------

    def file_objection(
        self,
        dataset_id: str,
        fields: list[str],
        reason: str,
        *,
        record_key: str | None = None,
        evidence: bytes | None = None,
        evidence_type: str | None = None,
    ) -> dict[str, Any]:
        """A subject disputes ``fields`` of its record (``record_key``: the period or record key value, if the
        dataset has one) with a reason and optionally an evidence file (``evidence_type``: application/pdf,
        image/png or image/jpeg)."""
        body: dict[str, Any] = {"dataset_id": dataset_id, "fields": fields, "reason": reason}
        if record_key is not None:
            body["record_key"] = record_key
        if evidence is not None:
            if evidence_type is None:
                raise ValueError("evidence_type is required with evidence")
            body["evidence"] = {"media_type": evidence_type, "content": base64.b64encode(evidence).decode()}
        result: dict[str, Any] = self.request("POST", "/v1/objections", json=body)
        return result

    def objections(self, *, state: str | None = None, overdue: bool | None = None) -> list[dict[str, Any]]:
        """The objections the caller may see (following pages)."""
        return self._all_pages("/v1/objections", {"state": state, "overdue": overdue})

    def objection(self, objection_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/objections/{objection_id}")
        return result

    def objection_evidence(self, objection_id: str) -> bytes:
        response = self._http.get(f"/v1/objections/{objection_id}/evidence")
        _raise_for(response)
        return response.content

    def accept_objection(
        self, objection_id: str, corrected: dict[str, Any], *, note: str | None = None
    ) -> dict[str, Any]:
        """The provider accepts with corrected values for the disputed fields (a new dataset version)."""
        body: dict[str, Any] = {"corrected": corrected}
        if note is not None:
            body["note"] = note
        result: dict[str, Any] = self.request("POST", f"/v1/objections/{objection_id}/accept", json=body)
        return result

    def reject_objection(self, objection_id: str, reason: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/objections/{objection_id}/reject", json={"reason": reason}
        )
        return result

    def corrections(self) -> list[dict[str, Any]]:
        """A bank's correction notices: released results that used a value later corrected (following pages)."""
        return self._all_pages("/v1/corrections", {})

    def _all_pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = None
        while True:
            query = {k: v for k, v in {**params, "after": after}.items() if v is not None}
            page = self.request("GET", path, params=query)
            items.extend(page["items"])
            after = page.get("next_after")
            if after is None:
                return items

    # --- audit ---------------------------------------------------------------------------------------

    def public_key(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/audit/public-key")
        return result

    def checkpoint(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/audit/checkpoint")
        return result

    def entries(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self.request("GET", "/v1/audit/entries", params=params)
        return result

    def entry(self, index: int, *, tree_size: int | None = None) -> dict[str, Any]:
        params = {"tree_size": tree_size} if tree_size is not None else {}
        result: dict[str, Any] = self.request("GET", f"/v1/audit/entries/{index}", params=params)
        return result

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", "/v1/audit/consistency", params={"first": first, "second": second}
        )
        return result

    def mine(self, *, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"after": after, "limit": limit}.items() if v is not None}
        result: dict[str, Any] = self.request("GET", "/v1/audit/mine", params=params)
        return result

    # --- verification (client side) ------------------------------------------------------------------

    @staticmethod
    def verify_proven_entry(proven: dict[str, Any], verifier: NoteVerifier) -> dict[str, Any]:
        """Check a proven entry end to end and return the entry document.

        The checkpoint must carry a valid signature by ``verifier``; the entry bytes must hash to the leaf
        hash; the inclusion proof must lead from that leaf to the checkpoint's root. A redacted entry (an
        enterprise's view of a batch entry, without its bytes) is checked for its presence in the log only,
        and comes back with ``"redacted": True``. Raises
        :class:`~pps.errors.ProofVerificationError` otherwise.
        """
        if not proven.get("checkpoint"):
            raise errors.ProofVerificationError(
                "the entry comes without a signed checkpoint to check against"
            )
        cp = verify_checkpoint(proven["checkpoint"]["note"], verifier, origin=verifier.name)
        if cp.tree_size != proven["tree_size"]:
            raise errors.ProofVerificationError("the proof is for another tree size than the checkpoint")
        proof = [b64d(p) for p in proven["inclusion_proof"]]
        if not proven["entry_b64"]:  # a redacted entry: only its presence in the signed log can be checked
            merkle.verify_inclusion(
                proven["index"], cp.tree_size, b64d(proven["leaf_hash"]), proof, cp.root_hash
            )
            redacted: dict[str, Any] = dict(proven["entry"])
            redacted["redacted"] = True
            return redacted
        data = b64d(proven["entry_b64"])
        leaf = merkle.leaf_hash(data)
        if leaf != b64d(proven["leaf_hash"]):
            raise errors.ProofVerificationError("the entry bytes do not hash to the given leaf hash")
        merkle.verify_inclusion(proven["index"], cp.tree_size, leaf, proof, cp.root_hash)
        doc: dict[str, Any] = json.loads(data)
        if doc.get("index") != proven["index"]:
            raise errors.ProofVerificationError("the entry names another index than the one proven")
        return doc

    def verify_consistency(
        self, old_note: str, new_note: str, verifier: NoteVerifier
    ) -> tuple[Checkpoint, Checkpoint]:
        """Verify two signed checkpoints and that the newer extends the older (fetching the proof)."""
        old = verify_checkpoint(old_note, verifier, origin=verifier.name)
        new = verify_checkpoint(new_note, verifier, origin=verifier.name)
        if new.tree_size < old.tree_size:
            raise errors.ProofVerificationError("the newer checkpoint is smaller than the older one")
        if old.tree_size == 0:
            return old, new
        proof = [b64d(p) for p in self.consistency(old.tree_size, new.tree_size)["proof"]]
        merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
        return old, new


class FederatedClient:
    """A bank's side of horizontal federated training (``/v1/federations``) over a :class:`PPSClient`.

    The secure-aggregation secrets of a round (two X25519 keys, the self-mask seed, the peers' shares) live in
    this object only; they never go to the server. If the object is lost mid-round, the bank has dropped out
    of that round (the others finish it without it, as long as the threshold holds).

    >>> fc = FederatedClient(PPSClient(url, token))
    >>> fed = fc.create(name="sme-pd", participants=[me, b, c], kind="horizontal_lr",
    ...                 feature_schema=names, rounds=10, threshold=2)
    >>> fc.train(fed["id"], x_train, y_train)   # blocks until done or aborted
    """

    def __init__(self, client: PPSClient) -> None:
        self.client = client
        self._rounds: dict[str, tuple[int, Any]] = {}

    def create(self, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.client.request("POST", "/v1/federations", json=fields)
        return out

    def list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.client.request("GET", "/v1/federations")
        return out

    def federation(self, federation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.client.request("GET", f"/v1/federations/{federation_id}")
        return out

    def accept(self, federation_id: str, purpose: str = "joint_model_training") -> dict[str, Any]:
        out: dict[str, Any] = self.client.request(
            "POST", f"/v1/federations/{federation_id}/accept", json={"purpose": purpose}
        )
        return out

    def advance(self, federation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.client.request("POST", f"/v1/federations/{federation_id}/advance", json={})
        return out

    def post_message(self, federation_id: str, frame: bytes) -> dict[str, Any]:
        out: dict[str, Any] = self.client.request(
            "POST",
            f"/v1/federations/{federation_id}/messages",
            json={"message": base64.b64encode(frame).decode()},
        )
        return out

    @staticmethod
    def model(view: dict[str, Any]) -> Any:
        """The federation's current global model as a :mod:`models.fl` estimator."""
        from models.fl import make_model
        from pps.services.federated import MODEL_KINDS, model_hyper

        m = make_model(
            MODEL_KINDS[view["kind"]],
            len(view["feature_schema"]),
            **model_hyper(view["kind"], view["config"], view["local_epochs"]),
        )
        return m.set_flat(view["global_weights"])

    def step(self, federation_id: str, x: Any, y: Any) -> dict[str, Any]:
        """Take this bank's next action in the current round, if there is one now; return the federation.

        Advertise keys → share keys → train locally from the round's global model and post the masked update
        (weighted by this bank's sample count) → post unmasking shares. Returns at once when waiting for others.
        """
        from protocols.secagg import RoundInfo, SecAggClient, SecAggParams

        view = self.federation(federation_id)
        rnd = view.get("round")
        if view["state"] != "running" or rnd is None or rnd.get("posted"):
            return view
        r, phase = rnd["round_no"], rnd["phase"]
        if phase == "advertise_keys":
            params = SecAggParams(
                n=len(view["participants"]),
                threshold=view["threshold"],
                dim=view["n_params"],
                clip_norm=view["config"]["clip_norm"],
            )
            sa = SecAggClient(RoundInfo(federation_id, r, params), view["my_position"])
            self._rounds[federation_id] = (r, sa)
            return self.post_message(federation_id, sa.advertise_keys())
        held = self._rounds.get(federation_id)
        if held is None or held[0] != r or view.get("inbox") is None:
            return view  # this bank is out of this round (it lost its secrets or dropped out earlier)
        sa, inbox = held[1], b64d(view["inbox"])
        if phase == "share_keys":
            return self.post_message(federation_id, sa.share_keys(inbox))
        if phase == "masked_input":
            model = self.model(view)
            start = model.get_flat()
            delta = model.fit(x, y).get_flat() - start
            weight = min(len(y), sa.info.params.max_weight)
            return self.post_message(federation_id, sa.masked_input(inbox, delta, weight))
        if phase == "unmask":
            out = self.post_message(federation_id, sa.unmask(inbox))
            self._rounds.pop(federation_id, None)
            return out
        return view

    def train(
        self, federation_id: str, x: Any, y: Any, *, poll: float = 0.2, timeout: float = 3600.0
    ) -> dict[str, Any]:
        """Take part until the federation is done or aborted (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.step(federation_id, x, y)
            if view["state"] in ("done", "aborted"):
                return view
            if time.monotonic() > deadline:
                raise errors.ServiceUnavailable(f"federation {federation_id} did not finish in {timeout} s")
            time.sleep(poll)


def _sealed_context(public_context: bytes) -> tuple[Any, int]:
    import tenseal as ts

    ctx = ts.context_from(public_context)
    if ctx.has_secret_key() or not ctx.is_public():
        raise errors.InvalidInput(
            "a sealed-dataset context must be public (the enclave keeps the secret key)"
        )
    slots = ctx.seal_context().data.first_context_data().parms().poly_modulus_degree() // 2
    return ctx, int(slots)


def encrypt_sealed_columns(
    public_context: bytes, columns: dict[str, Iterable[float]], bounds: dict[str, tuple[float, float]]
) -> dict[str, list[bytes]]:
    """The provider's side of a sealed upload: each column clipped to its ``bounds`` and encrypted
    column-major under the enclave's public context — one CKKS vector per block of N/2 subjects (slot ``r`` of
    block ``b`` holds subject ``b * N/2 + r``; the last block padded with zeros). Missing values are refused:
    impute before sealing."""
    import numpy as np
    import tenseal as ts

    ctx, slots = _sealed_context(public_context)
    out: dict[str, list[bytes]] = {}
    for name, values in columns.items():
        if name not in bounds:
            raise errors.InvalidInput(f"column {name!r} needs bounds (lower, upper)")
        lower, upper = bounds[name]
        x = np.asarray(list(values), dtype=np.float64)
        if not np.isfinite(x).all():
            raise errors.InvalidInput(
                f"column {name!r} holds missing or infinite values: impute before sealing"
            )
        x = np.clip(x, lower, upper)
        n_blocks = -(-len(x) // slots)
        padded = np.zeros(n_blocks * slots)
        padded[: len(x)] = x
        out[name] = [
            ts.ckks_vector(ctx, padded[b * slots : (b + 1) * slots].tolist()).serialize()
            for b in range(n_blocks)
        ]
    return out


def encrypt_sealed_integer_columns(
    bfv_public_context: bytes, columns: dict[str, Iterable[float]], bounds: dict[str, tuple[float, float]]
) -> dict[str, list[bytes]]:
    """The provider's side of an exact integer column: each value must be an integer in its column's ``bounds``
    (integers too) — refused otherwise, never clipped or rounded silently — and the column's worst-case sum
    (subjects x the larger bound) must stay below half the BFV plain modulus, so it cannot wrap. Encrypted
    column-major under the enclave's public BFV context in blocks of N/2 subjects, as :func:`encrypt_sealed_columns`
    does (slot ``r`` of block ``b`` holds subject ``b * N/2 + r``; the last block padded with zeros)."""
    import numpy as np
    import tenseal as ts

    from enclave_sim.sealed import plain_modulus_of

    ctx, slots = _sealed_context(bfv_public_context)
    t = plain_modulus_of(ctx)
    out: dict[str, list[bytes]] = {}
    for name, values in columns.items():
        if name not in bounds:
            raise errors.InvalidInput(f"column {name!r} needs bounds (lower, upper)")
        lower, upper = bounds[name]
        if lower != int(lower) or upper != int(upper) or not lower < upper:
            raise errors.InvalidInput(f"integer column {name!r}: bounds are integers, lower < upper")
        x = np.asarray(list(values), dtype=np.float64)
        if not np.isfinite(x).all() or (x != np.round(x)).any():
            raise errors.InvalidInput(f"integer column {name!r} holds a value that is not an integer")
        if (x < lower).any() or (x > upper).any():
            raise errors.InvalidInput(
                f"integer column {name!r} holds values outside [{int(lower)}, {int(upper)}]: declare wider bounds"
            )
        if len(x) * max(abs(int(lower)), abs(int(upper))) > (t - 1) // 2:
            raise errors.InvalidInput(
                f"integer column {name!r}: {len(x)} values in [{int(lower)}, {int(upper)}] could sum past the "
                f"plain modulus {t}; narrow the bounds"
            )
        n_blocks = -(-len(x) // slots)
        padded = np.zeros(n_blocks * slots, dtype=np.int64)
        padded[: len(x)] = x.astype(np.int64)
        out[name] = [
            ts.bfv_vector(ctx, padded[b * slots : (b + 1) * slots].tolist()).serialize()
            for b in range(n_blocks)
        ]
    return out


def encrypt_sealed_weights(public_context: bytes, weights: dict[str, float]) -> dict[str, bytes]:
    """A bank's weights under the enclave's public context, each replicated across all slots."""
    import tenseal as ts

    ctx, slots = _sealed_context(public_context)
    return {k: ts.ckks_vector(ctx, [float(w)] * slots).serialize() for k, w in weights.items()}
