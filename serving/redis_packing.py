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
    """``client`` (a ``redis.asyncio.Redis`` over a TCP pool that opened no connection yet) with its connections
    packing commands in C; any other client is returned as it is."""
    pool = client.connection_pool
    if pool.connection_class is Connection:
        pool.connection_class = HiredisPackedConnection
    return client
