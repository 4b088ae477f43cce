"""The PPS wire package: what the client SDK and the server share, defined once.

* :mod:`pps_wire.errors` — the error hierarchy and the list of error codes; :mod:`pps_wire.envelope` — the
  error body of every failed request;
* :mod:`pps_wire.schemas` — the typed request and response bodies of the HTTP API (pydantic);
* :mod:`pps_wire.merkle`, :mod:`pps_wire.checkpoint` — RFC 6962/9162 Merkle hashing and proof verification, the
  C2SP signed-note checkpoint format; :mod:`pps_wire.receipt` — the signed consent receipt and its verifier;
* :mod:`pps_wire.quote`, :mod:`pps_wire.provision`, :mod:`pps_wire.measurement`, :mod:`pps_wire.sealed`,
  :mod:`pps_wire.enclave_errors` — the simulated enclave's quote and its verification, HPKE provisioning and
  the release format, the measurement recipe, the sealed-dataset score request;
* :mod:`pps_wire.frames` — the binary bodies of PSI and scoring results and of vertical-training exchanges;
* :mod:`pps_wire.federated` — the model a horizontal federation trains (its layout, its initial weights).

It imports nothing of PPS's other packages (``pps``, ``api``, ``enclave_sim``, ``models``, ``pps_client``). This
file stays empty of imports on purpose: the simulated enclave loads some of these modules as its measured code
(``enclave_sim.platform``), which must not have been imported before.
"""
