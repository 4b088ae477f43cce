"""The model registry: a bank's models, their parts, held-out evaluations and report pages."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, Protocol

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import EvaluationIn, ModelOut, ModelReportOut


class SupportsToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class Models(Resource):
    def list(self) -> builtins.list[ModelOut]:
        """My models (every model for auditors and platform admins)."""
        return self._client._call_list("GET", "/v1/models", ModelOut)

    def get(self, model_id: str) -> ModelOut:
        return self._client._call("GET", f"/v1/models/{model_id}", ModelOut)

    def parameters(self, model_id: str) -> dict[str, Any]:
        """This bank's own part of a model (its shape depends on the model's kind; the fetch is on the record)."""
        data = self._client._json("GET", f"/v1/models/{model_id}/parameters")
        return dict(data)

    def report(self, model_id: str) -> ModelReportOut:
        """The held-out evaluation as JSON (curves and counts)."""
        return self._client._call("GET", f"/v1/models/{model_id}/report", ModelReportOut)

    def report_html(self, model_id: str) -> str:
        """The evaluation page (ROC and KS curves drawn), to save and open in a browser."""
        return self._client._request("GET", f"/v1/models/{model_id}/report.html").text

    def post_evaluation(self, model_id: str, evaluation: SupportsToDict | Mapping[str, Any]) -> ModelOut:
        """Post a held-out evaluation computed here, where the labels are (``models.metrics.Evaluation`` or its
        ``to_dict()``)."""
        doc = dict(evaluation) if isinstance(evaluation, Mapping) else evaluation.to_dict()
        body = EvaluationIn(evaluation=doc)
        return self._client._call(
            "POST", f"/v1/models/{model_id}/evaluation", ModelOut, json_body=dumps(body)
        )
