"""The client: one HTTP connection pool, the token, the error mapping, and the resources that use them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from pps_client._exceptions import InvalidResponse, RequestTimeout, TransportError, api_error
from pps_wire.schemas import Me
from pps_wire.subject_sign import SubjectKey

M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT = 30.0


class Client:
    """A connection to a PPS service as one organisation (the owner of ``token``).

    >>> with Client("https://pps.example", token="pps_...") as client:
    ...     me = client.me()
    ...     found = client.psi.run(customers, purpose="loan_underwriting")

    The API is grouped by resource: :attr:`orgs`, :attr:`tokens`, :attr:`datasets`, :attr:`consents`,
    :attr:`jobs`, :attr:`psi`, :attr:`scoring`, :attr:`aggregates`, :attr:`enclave`, :attr:`sealed`,
    :attr:`objections`, :attr:`repairs`, :attr:`ledger`, :attr:`models`, :attr:`vertical`, :attr:`federations`. Answers are typed
    (:mod:`pps_wire.schemas`); failures raise :class:`~pps_client.PPSClientError` subclasses. Secret keys (the
    bank's CKKS and Paillier keys, secure-aggregation secrets) are made and kept in this process; only public
    material and ciphertexts are sent.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        subject_key: SubjectKey | None = None,
    ) -> None:
        """``subject_key``: a subject's own signing key (:class:`pps_wire.subject_sign.SubjectKey`); consent
        grants, approvals and revocations made through this client are signed with it, locally."""
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.subject_key = subject_key
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

        from pps_client._resources.aggregates import Aggregates
        from pps_client._resources.consents import Consents
        from pps_client._resources.datasets import Datasets
        from pps_client._resources.enclave import Enclave
        from pps_client._resources.federations import Federations
        from pps_client._resources.identity import BreakGlassActions, Orgs, SubjectKeys, Tokens
        from pps_client._resources.jobs import Jobs
        from pps_client._resources.ledger import Ledger
        from pps_client._resources.models import Models
        from pps_client._resources.objections import Objections
        from pps_client._resources.persons import Decisions, Persons
        from pps_client._resources.psi import PSI
        from pps_client._resources.repairs import Repairs
        from pps_client._resources.reports import Reports
        from pps_client._resources.scoring import Scoring
        from pps_client._resources.sealed import Sealed
        from pps_client._resources.vertical import Vertical

        self.orgs = Orgs(self)
        self.tokens = Tokens(self)
        self.keys = SubjectKeys(self)
        self.break_glass = BreakGlassActions(self)
        self.datasets = Datasets(self)
        self.consents = Consents(self)
        self.jobs = Jobs(self)
        self.psi = PSI(self)
        self.scoring = Scoring(self)
        self.persons = Persons(self)
        self.decisions = Decisions(self)
        self.aggregates = Aggregates(self)
        self.enclave = Enclave(self)
        self.sealed = Sealed(self)
        self.objections = Objections(self)
        self.repairs = Repairs(self)
        self.reports = Reports(self)
        self.ledger = Ledger(self)
        self.models = Models(self)
        self.vertical = Vertical(self)
        self.federations = Federations(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def me(self) -> Me:
        """Who this token belongs to: the organisation and the token's id."""
        return self._call("GET", "/v1/me", Me)

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """A raw call — for a route this SDK has no method for, or to send a body exactly as given (unchecked
        here): the answer's JSON (its text if it is not JSON). Errors are raised as everywhere else."""
        response = self._request(method, path, json_body=json, params=params)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # --- plumbing (used by the resources) ---------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send a request; raise :class:`TransportError` if no answer came, the mapped :class:`APIError` if the
        answer is an error."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                json=json_body,
                params=query,
                content=content,
                headers=dict(headers) if headers else None,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            waited = timeout if timeout is not None else self.timeout
            raise RequestTimeout(
                f"the PPS service at {self.base_url} did not answer {method} {path} within {waited:g} s "
                f"({type(exc).__name__}); it may be busy — retry, or give a longer timeout",
                url=self.base_url,
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(
                f"cannot reach the PPS service at {self.base_url} ({_reason(exc)}): check that it is running "
                "and that the URL (--url / PPS_URL) is right",
                url=self.base_url,
            ) from None
        if response.is_success:
            return response
        raise api_error(response.status_code, response.content)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise InvalidResponse(
                f"{method} {path}: the answer is not JSON ({response.headers.get('content-type')})"
            ) from None

    def _call(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        """A request whose answer is one ``model``."""
        return _parse(model, self._json(method, path, **kwargs), f"{method} {path}")

    def _call_list(self, method: str, path: str, model: type[M], **kwargs: Any) -> list[M]:
        """A request whose answer is a list of ``model``."""
        data = self._json(method, path, **kwargs)
        try:
            return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise InvalidResponse(
                f"{method} {path}: the answer does not have the API's shape: {exc}"
            ) from None

    def _pages(self, path: str, model: type[M], params: Mapping[str, Any] | None = None) -> list[M]:
        """Every item of a paged list (``{"items", "next_after"}``), following the pages."""
        items: list[M] = []
        after: Any = None
        while True:
            page = self._json("GET", path, params={**(params or {}), "after": after})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise InvalidResponse(f"GET {path}: the answer is not a page of items")
            items.extend(_parse(model, item, f"GET {path}") for item in page["items"])
            after = page.get("next_after")
            if after is None:
                return items

    def _bytes(self, path: str) -> bytes:
        return self._request("GET", path).content


def _parse(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidResponse(f"{where}: the answer does not have the API's shape: {exc}") from None


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text.splitlines()[0][:200]


def dumps(model: BaseModel) -> Any:
    """A request model as the JSON the API reads: by alias, only the fields given (the service fills in the
    same defaults)."""
    return json.loads(model.model_dump_json(by_alias=True, exclude_unset=True))
