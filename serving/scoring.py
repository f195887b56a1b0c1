"""Scoring within the latency budget, and the fallback chain: the first candidate of a route that answers in
time gives the scores; a failing, slow or hung model hands over to the next one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlplatform.errors import ModelUnavailable, OnlineStoreUnavailable
from serving.accounting import Accounting
from serving.dispatcher import Candidate, Route
from serving.model_pool import LoadedModel, log_text, public_reason

log = logging.getLogger(__name__)
HANG_GRACE_S = 0.25  # how far past the latency budget a model may run before it is abandoned as hung


class BudgetedScorer:
    """Runs a model on a small thread pool and judges its compute time against the latency budget."""

    def __init__(self, latency_budget_ms: float, workers: int = 2) -> None:
        self.budget_s = latency_budget_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score")

    async def score(self, model: LoadedModel, X: np.ndarray, budget: bool) -> np.ndarray:
        """Scores of ``X``; with ``budget``, TimeoutError if the model takes longer than the budget."""
        if not budget or self.budget_s <= 0:
            return model.predict(X)
        loop = asyncio.get_running_loop()

        def timed() -> tuple[np.ndarray, float]:
            started = time.perf_counter()
            return model.predict(X), time.perf_counter() - started

        # The budget judges the model's own compute time, not time spent queueing behind other requests in a
        # saturated event loop (falling back would not help there: the previous golden waits in the same queue).
        # A model that hangs is cut off after the budget plus HANG_GRACE_S.
        scores, took = await asyncio.wait_for(loop.run_in_executor(self._executor, timed),
                                              self.budget_s + HANG_GRACE_S)
        if took > self.budget_s:
            raise TimeoutError(f"took {took * 1000:.2f} ms, over the {self.budget_s * 1000:g} ms budget")
        return scores

    def close(self) -> None:
        """Stop the scoring threads (after the running predictions finish)."""
        self._executor.shutdown(wait=True)


@dataclass(frozen=True)
class Answer:
    """The scores of a route, the candidate that gave them, and the route's last fallback reason (or None)."""

    scores: np.ndarray
    candidate: Candidate
    reason: str | None


class FallbackChain:
    """Asks a route's candidates in order; only the primary is held to the latency budget."""

    def __init__(self, scorer: BudgetedScorer, accounting: Accounting) -> None:
        self.scorer = scorer
        self.accounting = accounting

    async def answer(self, route: Route, matrix: Callable[[LoadedModel], Awaitable[np.ndarray]], n: int) -> Answer:
        """Scores of ``n`` rows; ``matrix(model)`` gives that model's input rows. ModelUnavailable if all fail."""
        reason = route.unavailable_reason
        first_failure: str | None = None  # why the first candidate that failed did, for the fallback metric
        for depth, candidate in enumerate(route.chain):
            model = candidate.model
            try:
                scores = await self.scorer.score(model, await matrix(model), budget=depth == 0)
            except OnlineStoreUnavailable:
                raise
            except Exception as exc:  # TimeoutError (over budget) or a failing model
                why = "latency_budget" if isinstance(exc, TimeoutError) else "model_error"
                first_failure = first_failure or why
                detail = (f"over the {self.scorer.budget_s * 1000:g} ms latency budget" if why == "latency_budget"
                          else public_reason(exc))  # the answer carries it: no path (the log has the whole text)
                reason = f"{model.name} v{model.version} failed: {detail}"
                log.warning("falling back: %s (%s)", reason, log_text(exc))
                continue
            if first_failure is not None:  # counted only when a fallback model actually answered
                self.accounting.fell_back(first_failure, n)
            return Answer(scores, candidate, reason)
        raise ModelUnavailable(f"every model on the route failed; last: {reason}")

    def close(self) -> None:
        """Stop the scoring threads."""
        self.scorer.close()
