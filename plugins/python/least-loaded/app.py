"""Switchyard policy `least-loaded-py`, written in Python.

Least loaded first: a candidate's load is its calls of the service in flight
relative to the most it takes at once (`in-flight / max-concurrent`, 0..1).
Candidates are ranked by load, lowest first; equal loads are ordered by a
rotation drawn from `request.random`, so ties spread over the tied nodes and
a pick is deterministic for a given request. Stateless: `observe` ignores
what it is told, and hints are ignored.

Built into a WebAssembly component against the world `ranked-policy` of
`wit/policy.wit` by `componentize-py` (see plugins/README.md):

    componentize-py -d wit -w ranked-policy componentize app \
        -p plugins/python/least-loaded -o plugins/dist-polyglot/least-loaded-py.wasm
"""

from wit_world import WitWorld as WitWorldBase
from wit_world.exports import Ranker as RankerBase
from wit_world.exports.ranker import Ranking, Ranking_Order
from wit_world.imports.types import (
    Candidates,
    Decision,
    Decision_Route,
    Outcome,
    Request,
)

NAME = "least-loaded-py"


def order(req: Request, candidates: Candidates) -> list[int]:
    """Candidate indices, least loaded first; ties by a rotation from `req.random`."""
    n = len(candidates.node)
    start = req.random % n
    in_flight = candidates.in_flight
    max_concurrent = candidates.max_concurrent

    def key(i: int) -> tuple[float, int]:
        # max-concurrent > in-flight >= 0, so the division is safe; guard it
        # anyway rather than trap on a host that broke its promise.
        load = in_flight[i] / max_concurrent[i] if max_concurrent[i] else 1.0
        return (load, (i - start) % n)

    return sorted(range(n), key=key)


class WitWorld(WitWorldBase):
    """The world-level exports: `name`, `pick`, `observe`."""

    def name(self) -> str:
        return NAME

    def pick(self, req: Request, candidates: Candidates) -> Decision:
        return Decision_Route(order(req, candidates)[0])

    def observe(self, outcome: Outcome) -> None:
        return None


class Ranker(RankerBase):
    """The `ranker` export: the whole ranking, so the gateway can fall back."""

    def rank(self, req: Request, candidates: Candidates) -> Ranking:
        return Ranking_Order(order(req, candidates))
