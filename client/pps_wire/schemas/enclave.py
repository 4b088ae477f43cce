"""The simulated enclave: quotes for a caller's nonce, and a bank's attested jobs (formats: ``docs/protocols.md``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response

HEX64 = r"^[0-9a-fA-F]{64}$"


class QuoteOut(Response):
    quote: str = Field(description="the quote, base64 (184 bytes; format in docs/protocols.md)")
    quote_hash: str = Field(description="hex SHA-256 of the quote: provisioning binds to it")
    measurement: str
    isv_svn: int
    debug: bool
    enclave_key: str = Field(description="hex X25519 public key of the enclave instance")
    vendor_key: str = Field(
        description="hex Ed25519 vendor attestation key, for information only: pin the one you got out of band"
    )


class ProvisionedIn(Request):
    enc: str = Field(max_length=64, description="HPKE encapsulated key, base64 (32 bytes)")
    ciphertext: str = Field(description="HPKE ciphertext of the PEPV envelope, base64")


class OutputIn(Request):
    release: list[Literal["metrics", "scores", "model"]] = Field(min_length=1, max_length=3)
    recipient_key: str | None = Field(
        None, pattern=HEX64, description="hex X25519 public key that scores and the model are encrypted to"
    )


class GBDTParams(Request):
    max_iter: int = 100
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    test_percent: int = 30
    seed: int = 0


class EnclaveJobIn(Request):
    job: Literal["gbdt"] = "gbdt"
    purpose: str = Field(max_length=64)
    subjects: list[Annotated[str, Field(max_length=18)]] | Literal["all_consented"]
    features: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=64, description="platform features to join (GET /v1/features)"
    )
    quote_hash: str = Field(pattern=HEX64, description="the quote the rows were encrypted for")
    rows: ProvisionedIn
    output: OutputIn
    params: GBDTParams = Field(default_factory=GBDTParams)
