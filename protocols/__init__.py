"""The cryptographic protocols (PSI, encrypted scoring, secure aggregation, vertical LR on Paillier), each a
package split by party with explicit message types and stages: sans-IO halves, bytes in and bytes out.

A library: no database, no HTTP, nothing from ``pps``, ``api``, ``models`` or ``enclave_sim``
(``tests/protocols/test_purity.py``). Errors are :mod:`protocols.errors`; fan-out goes through
:mod:`protocols.parallel`. The wire formats and who learns what: ``docs/protocols.md``. This file imports
nothing: the simulated enclave imports the package before it loads (and measures) the modules it runs.
"""
