"""The service's Redis commands packed by hiredis's C packer (as redis-py's sync client already does) instead of
redis-py's asyncio client's pure-Python one: each request's pipeline carries ~60 arguments (the feature fields of
its HMGETs), and packing them in Python was the largest single cost of a request's CPU after the model."""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError


class HiredisPackedConnection(Connection):
    """An asyncio Redis connection whose commands are packed in C (``hiredis.pack_command``)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The RESP bytes of one command; a first argument with spaces (``"CLIENT SETNAME"``) is split, as redis-py
        does."""
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


def pack_in_c(client: Any) -> Any:
    """``client`` (a ``redis.asyncio.Redis`` over a TCP pool, or a ``redis.asyncio.RedisCluster``, that opened no
    connection yet) with its connections packing commands in C; any other client (TLS, ...) is returned as it is.

    A cluster client opens one pool per master it discovers, from the connection class in its connection options:
    that class and the seed nodes' are switched."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        if pool.connection_class is Connection:
            pool.connection_class = HiredisPackedConnection
        return client
    options = getattr(client, "connection_kwargs", None)
    manager = getattr(client, "nodes_manager", None)
    if isinstance(options, dict) and manager is not None and options.get("connection_class") is Connection:
        options["connection_class"] = HiredisPackedConnection
        manager.connection_kwargs["connection_class"] = HiredisPackedConnection
        for node in manager.startup_nodes.values():
            if node.connection_class is Connection and not node._connections:
                node.connection_class = HiredisPackedConnection
    return client
