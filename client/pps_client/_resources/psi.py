"""PSI: which of a bank's customers consented to it, computed here from blinded points."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pps_client._client import dumps
from pps_client._exceptions import InvalidResponse
from pps_client._resources._base import Resource
from pps_client._types import ProgressCallback
from pps_wire import frames
from pps_wire.errors import InvalidInput
from pps_wire.schemas import JobPublic, PSIRequestIn
from pps_wire.uscc import validate_uscc

if TYPE_CHECKING:
    from protocols.psi import PSIResult


def normalised_customers(customers: Iterable[str]) -> list[str]:
    """The customers' USCCs, normalised; ``ValueError`` names the first that is not one."""
    out = []
    for i, code in enumerate(customers):
        try:
            out.append(validate_uscc(code))
        except InvalidInput as exc:
            raise ValueError(f"customers[{i}] ({code!r}) is not a USCC: {exc.message}") from None
    return out


class PSI(Resource):
    def run(
        self,
        customers: Iterable[str],
        *,
        purpose: str,
        reveal_intersection: bool = True,
        operation: Literal["psi", "train"] = "psi",
        timeout: float = 300.0,
        on_progress: ProgressCallback | None = None,
    ) -> PSIResult:
        """Which of ``customers`` (USCCs) consented to this bank for ``purpose`` — or, with
        ``reveal_intersection=False``, only how many. ``operation="train"``: which consented to *training*
        (the row alignment of a vertical training).

        The bank's half runs here (``psi`` extra): only its customers' codes blinded under a fresh key leave;
        the answer is computed here from the service's SETUP and RESPONSE. Returns a
        :class:`protocols.psi.PSIResult`.
        """
        from protocols.psi import PSIClient

        half = PSIClient(
            normalised_customers(customers), normalise=validate_uscc, reveal_intersection=reveal_intersection
        )
        body = PSIRequestIn(
            purpose=purpose,
            reveal="intersection" if reveal_intersection else "size",
            request=base64.b64encode(half.create_request()).decode(),
            operation=operation,
        )
        job = self._client._call("POST", "/v1/psi", JobPublic, json_body=dumps(body))
        self._client.jobs.wait(job.id, timeout=timeout, on_progress=on_progress)
        try:
            setup, response = frames.unpack_psi_result(self._client.jobs.result(job.id))
            return half.finish(setup, response)
        except InvalidInput as exc:
            raise InvalidResponse(f"the PSI job's result does not open: {exc}") from None
