"""Unique ids for requests and generated transaction ids, cheap to make on the request path.

An id has the shape of ``uuid.uuid4().hex`` (32 lowercase hex digits) but costs a counter step instead of reading
the OS's random source: 20 random hex digits drawn once per process (again in a forked child), then a 12-digit
counter. Ids are unique across processes (80 random bits per process) and, within one, never repeat (2^48 ids).
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = secrets.token_hex(10)
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(10)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A fresh 32-hex-digit id, unique across processes."""
    return f"{_prefix}{next(_counter) & 0xFFFF_FFFF_FFFF:012x}"
