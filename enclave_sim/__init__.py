"""A simulated trusted execution environment: measurement, attestation quotes, provisioning, sealing, and an
isolated process that runs attested plaintext jobs under an output policy.

This package is a library: no database, no HTTP, nothing from ``pps`` or ``api``. The formats it shares with the
parties that talk to it — the quote and its verification, HPKE provisioning and the release, the measurement
recipe, the sealed-dataset score request — are the wire package's (:mod:`pps_wire.quote`,
:mod:`pps_wire.provision`, :mod:`pps_wire.measurement`, :mod:`pps_wire.sealed`), which it imports (and measures
as part of its code). Its modules:

* :mod:`enclave_sim.platform` — the simulated *hardware*: it loads the enclave's code from source bytes,
  measures exactly what it loads, derives sealing keys and signs quotes with the vendor attestation key;
* :mod:`enclave_sim.host` — the host side: starts the enclave in its own process (``spawn``) and talks to it
  through a narrow, typed message interface;
* :mod:`enclave_sim.crypto` — sealing (keys bound to the measurement);
* :mod:`enclave_sim.jobs` — the job interface and the jobs that run inside (gradient-boosted trees);
* :mod:`enclave_sim.core` — the enclave's message handler (what runs inside the process).

This file stays empty of imports on purpose: the enclave process imports the package before the platform
loads (and measures) the enclave's modules, which must not have been imported by then.
"""
