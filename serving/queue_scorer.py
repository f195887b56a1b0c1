"""Queue-based scoring (``mlplatform stream score``): the transaction event stream scored as it comes, the scores
published to a stream of their own (``scores_stream``, default ``mlplatform:scores``).

The scorer is the service without HTTP: ``ServingContext.open`` builds the same model pool, feature readers and
``Predictor``, and each event is scored by ``Predictor.predict`` exactly as ``POST /v1/predict`` scores the same
transaction at the same time (``Transaction.entity_row`` of the event's keys, amount and time ``ts_us``): the same
route, the same features as of just before the event (the event logs' reader excludes events at or after t, so
whether the activity consumer applied this event already changes nothing), the same score, decision and reasons.
Its predictions are accounted like served ones: Prometheus counters in the process, and feature-log rows in the
same folder, so monitoring sees queue-scored transactions beside served ones.

The stream is read as a consumer group of its own (``SCORER_GROUP``), with the loop every group of the stream
shares (``mlplatform.stream_group.GroupConsumer``: own pending entries first, entries of dead consumers claimed,
then new ones); processes with different ``--consumer`` names share the work.

Delivery is at least once, and publication once per transaction id: a batch's scores are published, then the batch
is acknowledged (XACK). Each score is published by one Lua script, atomically: ``SET {<scores_stream>}:scored:<txn>
NX EX`` (the marker, kept ``DEDUPE_TTL_S``) and, only if the marker was not there, ``XADD <scores_stream> MAXLEN ~``.
A redelivered event (its consumer died after publishing, before acknowledging), a claimed one still being scored by
a slow consumer, or the same transaction sent twice within the marker's life, publishes nothing a second time.
Before scoring, markers already set are looked up so that such events are not scored again (and not logged twice).

Back-pressure is bounded on both sides: a consumer holds at most ``batch_size`` entries in flight (XREADGROUP
COUNT; the rest wait in the events stream, itself capped by its writers at ``STREAM_MAX_LEN``), and the scores
stream is capped at ``SCORES_MAX_LEN`` (approximately): when nobody reads it, the scorer keeps going and the
oldest scores are trimmed, never a blocked scorer or an unbounded Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot

from mlplatform.contracts.activity_log import TransactionEvent
from mlplatform.errors import InvalidInputError, ModelUnavailable
from mlplatform.settings import Settings
from mlplatform.stream_group import (
    DEAD_MAXLEN,
    Entry,
    GroupConsumer,
    GroupOptions,
    dead_letter_fields,
    dead_letter_stream,
    every,
    group_info,
    parse_entry,
    text,
)
from serving.ids import new_id
from serving.prediction import Prediction, ScoringRequest
from serving.schemas import Transaction

log = logging.getLogger(__name__)

SCORER_GROUP = "mlplatform-scorer"
SCORES_MAX_LEN = 1_000_000  # scores kept (approximately): a reader further behind loses the oldest
DEDUPE_TTL_S = 86_400  # how long a transaction id's marker says "already published"
# the answer's fields carried as plain text (absent when null); every other field is JSON
TEXT_FIELDS = ("request_id", "transaction_id", "fallback_reason", "degraded", "decision")

# KEYS[1] the transaction's marker, KEYS[2] the scores stream; ARGV: marker ttl (s), maxlen, then field/value pairs.
# Returns the new entry's id, or false when the marker was already set (published before: nothing is added).
_PUBLISH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
return redis.call(unpack(args))
"""


def marker_key(scores_stream: str, transaction_id: str) -> str:
    """The key saying a transaction's score was published to ``scores_stream``: ``{<scores_stream>}:scored:<txn>``.

    Its hash tag is the stream's name (or the stream's own hash tag, if it has one), so that on a Redis Cluster the
    marker and the stream hash to the same slot and ``_PUBLISH`` may touch both."""
    if _hash_tag(scores_stream) is not None or "}" in scores_stream:
        return f"{scores_stream}:scored:{transaction_id}"
    return f"{{{scores_stream}}}:scored:{transaction_id}"


def _hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes instead of the whole key (between its first ``{`` and the next
    ``}``, if not empty), or None."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1:end] if end > start + 1 else None


def scoring_request(event: TransactionEvent) -> ScoringRequest:
    """The event as /v1/predict would score it: its keys and amount as the transaction's entity row, at its time."""
    txn = Transaction.model_construct(customer_id=event.customer_id, merchant_id=event.merchant_id,
                                      amount=float(event.amount), request_fields={})
    return ScoringRequest(new_id(), event.transaction_id, txn.entity_row(event.ts_us), event.ts_us)


def answer_fields(p: Prediction) -> dict[str, Any]:
    """The fields of the /v1/predict answer of ``p`` (without ``latency_ms``, and without contributions: the
    scorer does not explain), as the answer's JSON holds them."""
    from serving.routes.predict import answer_fields as route_fields
    from serving.schemas import PredictionOut

    out = PredictionOut.model_construct(**route_fields(p)).model_dump(mode="json")
    out.pop("contributions", None)
    out.pop("contributions_error", None)
    return out


def encode_fields(answer: Mapping[str, Any]) -> dict[str, str]:
    """A scores-stream entry: text fields as they are, every other value as JSON; nulls left out."""
    return {k: (v if k in TEXT_FIELDS else json.dumps(v)) for k, v in answer.items() if v is not None}


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """A scores-stream entry back as the /v1/predict answer's fields (absent ones null)."""
    f = {text(k): text(v) for k, v in fields.items()}
    out = {k: (v if k in TEXT_FIELDS else json.loads(v)) for k, v in f.items()}
    for k in TEXT_FIELDS:
        out.setdefault(k, None)
    return out


def check_same_slot(scores_stream: str) -> None:
    """Refuse a scores stream name whose markers would hash to another Redis Cluster slot than the stream."""
    if key_slot(marker_key(scores_stream, "x").encode()) != key_slot(scores_stream.encode()):
        raise InvalidInputError(
            f"scores stream {scores_stream!r}: on a Redis Cluster its name must not hold a '}}' outside a hash tag "
            "(its markers must share its slot); use a name like mlplatform:scores or {tag}:scores")


@dataclass(frozen=True)
class ScorerOptions(GroupOptions):
    """What one scorer reads (``GroupOptions``), where it publishes, and how."""

    scores_stream: str
    _: KW_ONLY
    group: str = SCORER_GROUP
    max_len: int = SCORES_MAX_LEN
    dedupe_ttl_s: int = DEDUPE_TTL_S


@dataclass
class ScorerTotals:
    """What a run did."""

    scored: int = 0  # events scored and published (and acknowledged)
    duplicates: int = 0  # events whose transaction was published before (nothing published again)
    dead: int = 0  # malformed entries copied to the dead-letter stream (and acknowledged)
    recovered: int = 0  # entries re-read from this consumer's pending or claimed from dead consumers
    batches: int = 0
    stopped_by: str = ""


@dataclass(frozen=True)
class ScorerProgress:
    """A periodic progress figure: totals so far, the rate since the last report, the group's lag and pending."""

    totals: ScorerTotals
    per_second: float
    lag: int | None
    pending: int | None


Score = Callable[[list[ScoringRequest]], list[Prediction]]


class QueueScorer(GroupConsumer):
    """One consumer of the scorer group: score each batch, publish each score once, then acknowledge the batch."""

    def __init__(self, client: Any, options: ScorerOptions, score: Score, stop: threading.Event | None = None,
                 on_progress: Callable[[ScorerProgress], None] | None = None,
                 periodic: Callable[[float], None] | None = None) -> None:
        super().__init__(client, options, stop)
        self.o: ScorerOptions = options
        self.score = score
        self.on_progress = on_progress
        self.reporting = on_progress is not None
        self.periodic = periodic
        self.totals = ScorerTotals()
        self._publish = client.register_script(_PUBLISH)
        # a cluster pipeline refuses EVALSHA (and its ``eval`` is no command): there the script goes whole (EVAL)
        self._cluster = isinstance(client, RedisCluster)
        if self._cluster:
            check_same_slot(options.scores_stream)

    def run(self) -> ScorerTotals:
        """Score until stopped (``stop`` set), ``max_events`` entries were handled, or idle ``idle_exit_s``."""
        self.totals.stopped_by = self.loop()
        self.totals.recovered = self.recovered
        return self.totals

    def tick(self, now: float) -> None:
        """The caller's periodic work (model and registry refresh)."""
        if self.periodic is not None:
            self.periodic(now)

    def process(self, entries: Sequence[Entry]) -> None:
        """Score the batch's new transactions, publish each score once, dead-letter the malformed, acknowledge."""
        o = self.o
        events: list[tuple[Any, TransactionEvent]] = []
        bad: list[tuple[Any, str, Any]] = []
        for entry_id, fields in entries:
            try:
                events.append((entry_id, parse_entry(fields)))
            except ValueError as exc:
                bad.append((entry_id, str(exc), fields))
        fresh = self._not_published(events)
        duplicates = len(events) - len(fresh)
        published = 0
        if fresh:
            predictions = self.score([scoring_request(e) for _, e in fresh])
            pipe = self.client.pipeline(transaction=False)
            for (entry_id, event), p in zip(fresh, predictions, strict=True):
                fields = encode_fields({**answer_fields(p), "event_id": text(entry_id), "ts_us": event.ts_us})
                args = [o.dedupe_ttl_s, o.max_len, *(x for kv in fields.items() for x in kv)]
                keys = [marker_key(o.scores_stream, event.transaction_id), o.scores_stream]
                if self._cluster:  # EVAL as a plain command: the cluster pipeline routes it by its keys' slot
                    pipe.execute_command("EVAL", _PUBLISH, len(keys), *keys, *args)
                else:
                    self._publish(keys=keys, args=args, client=pipe)
            published = sum(r is not None for r in pipe.execute())
            duplicates += len(fresh) - published
        pipe = self.client.pipeline(transaction=False)
        for entry_id, reason, fields in bad:
            log.warning("entry %s of %s is malformed: %s (dead-lettered)", text(entry_id), o.stream, reason)
            pipe.xadd(dead_letter_stream(o.scores_stream), dead_letter_fields(entry_id, reason, fields, o.consumer),
                      maxlen=DEAD_MAXLEN, approximate=True)
        pipe.xack(o.stream, o.group, *[e[0] for e in entries])
        pipe.execute()
        self.totals.scored += published
        self.totals.duplicates += duplicates
        self.totals.dead += len(bad)
        self.totals.batches += 1

    def _not_published(self, events: list[tuple[Any, TransactionEvent]]) -> list[tuple[Any, TransactionEvent]]:
        """The events whose transaction has no marker yet (the first of each transaction id within the batch)."""
        if not events:
            return []
        pipe = self.client.pipeline(transaction=False)
        for _, e in events:
            pipe.exists(marker_key(self.o.scores_stream, e.transaction_id))
        seen: set[str] = set()
        out = []
        for (entry_id, e), done in zip(events, pipe.execute(), strict=True):
            if not done and e.transaction_id not in seen:
                seen.add(e.transaction_id)
                out.append((entry_id, e))
        return out

    def report(self, per_second: float) -> None:
        """Hand a progress figure, with the group's lag and pending, to ``on_progress``."""
        info = group_info(self.client, self.o.stream, self.o.group) or {}
        self.totals.recovered = self.recovered
        self.on_progress(ScorerProgress(self.totals, per_second, info.get("lag"), info.get("pending")))


class ScoringService:
    """The service's context without HTTP, on an event loop of its own: ``score`` runs ``Predictor.predict``;
    ``refresh`` follows the model aliases and Feast's registry as the service's background loop does."""

    def __init__(self, settings: Settings) -> None:
        from serving.context import ServingContext

        # never append scored events back to the stream it reads (the route does that, not the Predictor); no
        # latency budget: a queue has no request waiting, so a slow batch is not handed to the fallback model
        self.settings = settings.model_copy(update={"serving_record_events": False, "serving_latency_budget_ms": 0.0})
        self.loop = asyncio.new_event_loop()
        try:
            self.ctx = ServingContext.open(self.settings)
        except BaseException:
            self.loop.close()
            raise
        if not self.ctx.ready:
            self.close()
            raise ModelUnavailable("no model can score: set the `golden` alias (`mlplatform promote`) and start "
                                   "again")
        s = self.settings
        self._models = every(s.serving_model_refresh_seconds, self._refresh_models)
        self._feast = every(s.registry_ttl_seconds, self._refresh_feast)

    def score(self, requests: list[ScoringRequest]) -> list[Prediction]:
        """The predictions ``POST /v1/predict`` answers for ``requests``."""
        return self.loop.run_until_complete(self.ctx.predictor.predict(requests))

    def refresh(self, now: float) -> None:
        """Between batches: the model aliases every serving_model_refresh_seconds, Feast's registry every
        registry_ttl_seconds (a failure is logged and retried, never fatal)."""
        self._models(now)
        self._feast(now)

    def _refresh_models(self) -> None:
        try:
            self.ctx.pool.refresh()
        except Exception:
            log.exception("model registry refresh failed; keeping the current models")

    def _refresh_feast(self) -> None:
        try:
            self.ctx.readers.refresh()
        except Exception:
            log.exception("Feast registry refresh failed; keeping the previous read plans")

    def close(self) -> None:
        """Finish shadows, flush the feature log, close Redis and the loop."""
        try:
            self.loop.run_until_complete(self.ctx.close())
        finally:
            self.loop.close()


def run_scorer(settings: Settings, client: Any, options: ScorerOptions, stop: threading.Event | None = None,
               on_progress: Callable[[ScorerProgress], None] | None = None) -> ScorerTotals:
    """Open the scoring service, score the stream until stopped, and close (the feature log flushed)."""
    service = ScoringService(settings)
    try:
        return QueueScorer(client, options, service.score, stop, on_progress, service.refresh).run()
    finally:
        service.close()
