"""Routing the platform's Redis writes on a Redis Cluster: which master holds a key, one pipeline per master.

A Redis Cluster splits the key space into 16,384 hash slots (CRC16 of the key, or of its ``{hash tag}``), each held
by one master. A command naming several keys must name keys of one slot (else ``CROSSSLOT``), so a Lua script over
many keys runs once per slot group (``slot_runs``), and pre-packed pipelines go to each master separately
(``node_groups`` + ``round_trips``: every master's batch is sent before any reply is read, so the masters work at
the same time). Feast's row keys are fixed by Feast's layout (no hash tags): they spread over every slot.

On a single Redis every helper degrades to the plain case (one group, the whole pipeline on one connection). A
master that does not answer is a ``RedisUnavailable`` naming it (never a password), as on a single Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis.cluster import key_slot

from mlplatform.redact import redact, redact_redis_address

# replies saying the slots moved under us (a resharding, a failover: MOVED, ASK; TRYAGAIN during a slot's move):
# refresh the slot map and send the batch again. CLUSTERDOWN (a master lost, slots uncovered) is not retried.
REROUTE_ERRORS = (redis.exceptions.AskError, redis.exceptions.TryAgainError)


class Rerouted(Exception):  # noqa: N818 - a signal, not an error the caller sees
    """A master answered MOVED/ASK/TRYAGAIN: the client's slot map is stale."""


def is_cluster(client: Any) -> bool:
    """Whether a redis-py client or pipeline (sync or asyncio) talks to a Redis Cluster."""
    from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster | AsyncClusterPipeline)


def slot_runs(keys: Sequence[bytes], limit: int, cluster: bool) -> list[range]:
    """Consecutive index ranges of ``keys``, at most ``limit`` long, in order; on a ``cluster`` each range's keys
    share one hash slot (one multi-key command per range is then legal)."""
    if not cluster:
        return [range(i, min(i + limit, len(keys))) for i in range(0, len(keys), limit)]
    runs: list[range] = []
    start, slot = 0, None
    for i, key in enumerate(keys):
        s = key_slot(key)
        if i and (s != slot or i - start >= limit):
            runs.append(range(start, i))
            start = i
        slot = s
    if keys:
        runs.append(range(start, len(keys)))
    return runs


def node_groups(client: Any, keys: Sequence[bytes]) -> list[tuple[Any, range | list[int]]]:
    """The keys' indices grouped by the master holding them (each group in the keys' order), with that master's
    connection pool: ``[(pool, indices), ...]``. A single Redis is one group of every index (a ``range``)."""
    if not is_cluster(client):
        return [(client.connection_pool, range(len(keys)))]
    manager = client.nodes_manager
    by_slot: dict[int, str] = {}
    groups: dict[str, tuple[Any, list[int]]] = {}
    try:
        for i, key in enumerate(keys):
            slot = key_slot(key)
            name = by_slot.get(slot)
            if name is None:
                node = manager.get_node_from_slot(slot)
                name = by_slot[slot] = node.name
                if name not in groups:
                    groups[name] = (client.get_redis_connection(node).connection_pool, [])
            groups[name][1].append(i)
    except redis.exceptions.RedisClusterException as exc:
        raise _unavailable(_cluster_name(client), exc) from None
    return list(groups.values())


def round_trips(packets: Sequence[tuple[Any, bytes, int]]) -> list[list[Any]]:
    """Send each pre-packed batch of pipelined commands ``(pool, packed, replies)`` on a connection of its pool,
    all before reading any reply, then read each one's ``replies`` answers. An error reply comes back as its
    exception object (the connection stays usable); a lost connection is dropped, never reused half-read, and
    raises ``RedisUnavailable`` naming the server."""
    taken: list[tuple[Any, Any]] = []
    where = "?"  # the server being talked to: named if it fails
    try:
        for pool, packed, _ in packets:
            where = pool_address(pool)
            conn = pool.get_connection()
            taken.append((pool, conn))
            conn.send_packed_command([packed])
        out = []
        for (pool, conn), (_, _, replies) in zip(taken, packets, strict=True):
            where = pool_address(pool)
            answers = []
            for _ in range(replies):
                try:
                    answers.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    answers.append(exc)
            out.append(answers)
        return out
    except BaseException as exc:
        for _, conn in taken:
            conn.disconnect()
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError) and not _is_typed(exc):
            raise _unavailable(where, exc) from None
        raise
    finally:
        for pool, conn in taken:
            pool.release(conn)


def raise_error_replies(replies: Sequence[Any], where: str = "?") -> None:
    """Raise for an error among ``replies`` (from the server ``where``): ``RedisUnavailable`` for CLUSTERDOWN (the
    cluster lost a master), ``Rerouted`` if a reply says the slot map is stale, else the first error reply."""
    errors = [r for r in replies if isinstance(r, Exception)]
    down = [e for e in errors if isinstance(e, redis.exceptions.ClusterDownError)]
    if down:
        raise _unavailable(where, down[0])
    if any(isinstance(e, REROUTE_ERRORS) for e in errors):
        raise Rerouted()
    if errors:
        raise errors[0]


def refresh_slots(client: Any) -> None:
    """Reload a cluster client's slot map (after ``Rerouted``)."""
    if is_cluster(client):
        with cluster_errors(client):
            client.nodes_manager.initialize()


@contextlib.contextmanager
def cluster_errors(client: Any) -> Iterator[None]:
    """Inside the block, a Redis Cluster failure redis-py does not type (a slot no master covers, a cluster it
    cannot reach, a lost master) is a ``RedisUnavailable`` naming the cluster's nodes; other errors pass."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
            redis.exceptions.RedisClusterException) as exc:
        if _is_typed(exc) or not is_cluster(client):
            raise
        raise _unavailable(_cluster_name(client), exc) from None


def _is_typed(exc: BaseException) -> bool:
    from mlplatform.errors import OnlineStoreUnavailable

    return isinstance(exc, OnlineStoreUnavailable)


def pool_address(pool: Any) -> str:
    """``host:port`` of a connection pool's server."""
    kwargs = getattr(pool, "connection_kwargs", {})
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _cluster_name(client: Any) -> str:
    try:
        return ",".join(node.name for node in client.get_nodes()) or "?"
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


def _unavailable(where: str, exc: BaseException) -> Exception:
    from mlplatform.stores import RedisUnavailable

    what = ("did not answer in time" if isinstance(exc, redis.TimeoutError) else
            "says the cluster is down" if isinstance(exc, redis.exceptions.ClusterDownError) else "failed")
    return RedisUnavailable(
        f"the online store (Redis at {redact_redis_address(where)}) {what} "
        f"({type(exc).__name__}: {redact(str(exc))}); check that every master of the cluster runs and that "
        "MLPLATFORM_REDIS_ADDR points at it"
    )
