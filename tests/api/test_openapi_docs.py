"""/docs and /redoc work without internet; the OpenAPI document states the real error envelope and bounds."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from fastapi import FastAPI


def test_the_docs_pages_load_everything_from_this_server(http: Callable[..., httpx.Client]) -> None:
    client = http()
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200, page
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: ?'([^']+)'", html.text)
        assert assets, page
        for asset in assets:
            assert not asset.startswith(("http://", "https://", "//")), f"{page} loads {asset} from elsewhere"
            assert client.get(asset).status_code == 200, asset


def test_every_error_answer_is_the_envelope_and_limit_is_bounded(app: FastAPI) -> None:
    schema = app.openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            for status in ("400", "404", "422", "500"):
                content = op["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path)
            if op.get("x-pps-roles") != ["public"]:
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            for param in op.get("parameters", []):
                if param["name"] == "limit":
                    limit = param["schema"].get("anyOf", [param["schema"]])[0]
                    assert limit["maximum"] == 1000 and limit["minimum"] == 1, (method, path)
    result = schema["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
    assert {"application/vnd.pps.psi-result", "application/vnd.pps.score-result"} <= set(result)
