"""Scoring within the latency budget, and the fallback chain: the first candidate of a route that answers in
time gives the scores; a failing, slow or hung model hands over to the next one."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
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
INLINE_SHARE = 0.1  # a model whose warm-up rows each took under this share of the budget scores rows on the loop


class BudgetedScorer:
    """Runs a model within the latency budget, judging its compute time against it.

    A single row goes on the event loop itself when the model's warm-up showed single rows taking under
    ``INLINE_SHARE`` of the budget (a 200-tree XGBoost model: ~0.1 ms; a tree ensemble's time per row is bounded by
    its trees and depth): handing it to a thread costs about as much again in wake-ups and GIL hand-overs (~0.13 ms
    a request at p50, and throughput at load). Such a call is still judged against the budget, and a model that
    overruns it once is scored on the threads from then on. Everything else (batches, models not warmed here, ones
    that overran) runs on a small thread pool, where a model that hangs is abandoned after the budget plus
    ``HANG_GRACE_S``."""

    def __init__(self, latency_budget_ms: float, workers: int = 2) -> None:
        self.budget_s = latency_budget_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score")
        self._off_loop: weakref.WeakSet[LoadedModel] = weakref.WeakSet()  # overran the budget on the loop once

    async def score(self, model: LoadedModel, X: np.ndarray, budget: bool) -> np.ndarray:
        """Scores of ``X``; with ``budget``, TimeoutError if the model takes longer than the budget."""
        if not budget or self.budget_s <= 0:
            return model.predict(X)
        if len(X) == 1 and self._on_loop(model):
            started = time.thread_time()
            scores = model.predict(X)
            self._judge(time.thread_time() - started, model)
            return scores
        loop = asyncio.get_running_loop()

        def timed() -> tuple[np.ndarray, float]:
            started = time.thread_time()
            return model.predict(X), time.thread_time() - started

        # The budget judges the model's own compute time: the CPU time of its thread (XGBoost scores on the calling
        # thread, nthread=1), not time spent queueing behind other requests in a saturated event loop nor waiting
        # for the GIL they hold (falling back would not help there: the previous golden waits in the same queue;
        # wall time did, and turned a loaded service's slow answers into 503s). A model that hangs or sleeps is cut
        # off after the budget plus HANG_GRACE_S of wall time.
        scores, took = await asyncio.wait_for(loop.run_in_executor(self._executor, timed),
                                              self.budget_s + HANG_GRACE_S)
        self._judge(took, None)
        return scores

    def _on_loop(self, model: LoadedModel) -> bool:
        row = getattr(model, "row_seconds", None)
        return row is not None and row < INLINE_SHARE * self.budget_s and model not in self._off_loop

    def _judge(self, took: float, on_loop: LoadedModel | None) -> None:
        if took > self.budget_s:
            if on_loop is not None:
                self._off_loop.add(on_loop)
            raise TimeoutError(f"took {took * 1000:.2f} ms, over the {self.budget_s * 1000:g} ms budget")

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
