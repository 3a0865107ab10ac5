"""Bounded fuzz of both receivers (``tests.e2e.fuzz_receivers``): 2,000 mutated requests per
transport (gRPC protobuf, HTTP protobuf, HTTP JSON) sent among valid control requests to a real
pipeline exporting to strict sinks.  No crash, no hang, a valid OTLP answer to every request,
every acknowledged control span delivered intact to both sinks, and nothing the receivers took
refused downstream.  ``python -m tests.e2e.fuzz_receivers --mutations 10000 --seed N`` runs more."""

from __future__ import annotations

import pytest

from tests.e2e.fuzz_receivers import TRANSPORTS, run

pytestmark = pytest.mark.timeout(900)

MUTATIONS = 2_000
SEED = 11


def test_malformed_requests_never_cost_another_clients_spans():
    figures = run(MUTATIONS, SEED, out=lambda line: None)
    assert figures.clean, f"seed {SEED}:\n{figures.report()}"
    assert [figures.mutations[t] for t in TRANSPORTS] == [MUTATIONS] * 3
    refused = {t: sum(n for (tt, status), n in figures.answers.items()
                      if tt == t and status in ("INVALID_ARGUMENT", "400")) for t in TRANSPORTS}
    taken = {t: sum(n for (tt, status), n in figures.answers.items()
                    if tt == t and status.split()[0] in ("OK", "200")) for t in TRANSPORTS}
    assert all(refused.values()) and all(taken.values()), (refused, taken)  # both kinds of mutant, everywhere
    assert figures.control_spans > 5_000
    assert figures.annotated > 0  # analysis ran on the mixed batches: rca.* additions are what may differ
