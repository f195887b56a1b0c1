"""Dispatcher: which model answers a customer (weighted, sticky A/B between golden and challengers) and which
shadow models also score the request off the request path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from serving.errors import ModelUnavailable
from serving.model_pool import LoadedModel, PoolState


def customer_bucket(customer_id: int | str, salt: str) -> float:
    """A stable number in [0, 1) for the customer: the same customer always lands in the same bucket."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Route:
    """The model that answers, the role it plays, who answers instead if it fails, and the shadows."""

    primary: LoadedModel
    role: str
    fallbacks: list[LoadedModel] = field(default_factory=list)
    shadows: list[LoadedModel] = field(default_factory=list)
    unavailable_reason: str | None = None  # set when the golden could not be loaded and a fallback is primary


class Dispatcher:
    """Weighted A/B split, sticky per customer by hash; shadows are listed but never answer."""

    def __init__(self, challenger_weight: float, salt: str) -> None:
        self.challenger_weight = challenger_weight
        self.salt = salt

    def route(self, state: PoolState, customer_id: int | str) -> Route:
        """The route for one customer under the pool state ``state``."""
        fallbacks = [m for m in (state.previous_golden,) if m is not None]
        if state.challengers and self.challenger_weight > 0:
            b = customer_bucket(customer_id, self.salt)
            if b < self.challenger_weight:
                pick = state.challengers[min(int(b / self.challenger_weight * len(state.challengers)),
                                             len(state.challengers) - 1)]
                chain = [m for m in (state.golden, state.previous_golden) if m is not None]
                return Route(pick, "challenger", chain, state.shadows)
        if state.golden is not None:
            return Route(state.golden, "golden", fallbacks, state.shadows)
        if state.previous_golden is not None:
            reason = f"golden unavailable: {state.golden_error or 'none promoted'}"
            return Route(state.previous_golden, "previous_golden", [], state.shadows, unavailable_reason=reason)
        raise ModelUnavailable(
            f"no model can answer: {state.golden_error or 'no golden model in the registry'}; "
            "train and promote one (`mlplatform train`, `mlplatform models promote`)"
        )
