"""Dispatcher: which model answers a customer (weighted, sticky A/B between golden and challengers), who answers
instead if it fails, the role each of them plays, and which shadow models also score off the request path.

The dispatcher is the only place that decides roles: a Route carries them, the predictor reads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mlplatform.errors import ModelUnavailable
from serving.model_pool import LoadedModel, PoolState

GOLDEN = "golden"
PREVIOUS_GOLDEN = "previous_golden"
CHALLENGER = "challenger"
SHADOW = "shadow"


def customer_bucket(customer_id: int | str, salt: str) -> float:
    """A stable number in [0, 1) for the customer: the same customer always lands in the same bucket."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, eq=False)
class Candidate:
    """A model that may answer, and the role it answers in."""

    model: LoadedModel
    role: str


@dataclass(frozen=True, eq=False)
class Route:
    """Who answers: ``chain[0]`` first, then the others in order if it fails (each with its role)."""

    chain: tuple[Candidate, ...]
    unavailable_reason: str | None = None  # set when the golden could not be loaded and a fallback is primary

    @property
    def primary(self) -> Candidate:
        """The candidate asked first."""
        return self.chain[0]


@dataclass(frozen=True)
class _Table:
    """Every route of one pool state, built once: the golden route and one route per challenger."""

    default: Route | None
    challengers: tuple[Route, ...]
    error: str | None = None


class Dispatcher:
    """Weighted A/B split, sticky per customer by hash; shadows are listed but never answer."""

    def __init__(self, challenger_weight: float, salt: str) -> None:
        self.challenger_weight = challenger_weight
        self.salt = salt
        self._routes: tuple[PoolState | None, _Table] = (None, _Table(None, ()))

    def route(self, state: PoolState, customer_id: int | str) -> Route:
        """The route for one customer under the pool state ``state``."""
        seen, table = self._routes
        if seen is not state:
            table = self._build(state)
        if table.challengers and self.challenger_weight > 0:
            b = customer_bucket(customer_id, self.salt)
            if b < self.challenger_weight:
                n = len(table.challengers)
                return table.challengers[min(int(b / self.challenger_weight * n), n - 1)]
        if table.default is None:
            raise ModelUnavailable(
                f"no model can answer: {table.error or 'no golden model in the registry'}; "
                "train and promote one (`mlplatform train`, `mlplatform models promote`)"
            )
        return table.default

    def shadows(self, state: PoolState) -> list[LoadedModel]:
        """The models that score every request off the request path in role ``SHADOW`` (never answering)."""
        return state.shadows

    def _build(self, state: PoolState) -> _Table:
        """The routes of ``state`` (shared by every request that sees it; no per-request allocation)."""
        previous = () if state.previous_golden is None else (Candidate(state.previous_golden, PREVIOUS_GOLDEN),)
        golden = () if state.golden is None else (Candidate(state.golden, GOLDEN),)
        default: Route | None = None
        if golden:
            default = Route(golden + previous)
        elif previous:
            default = Route(previous, unavailable_reason=f"golden unavailable: {state.golden_error or 'none promoted'}")
        challengers = tuple(Route((Candidate(m, CHALLENGER), *golden, *previous)) for m in state.challengers)
        table = _Table(default, challengers, state.golden_error)
        self._routes = (state, table)  # one reference store: a concurrent reader sees the old pair or the new
        return table
