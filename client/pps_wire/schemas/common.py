"""What every body of the API shares: the request base (unknown fields refused), the response base (frozen),
and the page of a list."""

from __future__ import annotations

import base64
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Request(BaseModel):
    """A request body: unknown fields are refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Response(BaseModel):
    """A response body: immutable; fields a newer server adds are ignored by an older client."""

    model_config = ConfigDict(frozen=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Page(Response, Generic[T]):
    items: list[T]
    next_after: str | int | None = Field(
        None, description="pass as `after` to get the next page; null on the last page"
    )
