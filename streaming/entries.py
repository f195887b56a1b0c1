"""Stream entries as events: parsing with the reason a malformed entry is refused, and the dead-letter stream.

The contract (``mlplatform.contracts.activity_log.TransactionEvent``) reads the fields; on top of it an event must
be usable by the aggregation: ids within int64, a finite amount, a time whose microseconds a double holds exactly.
Every group of the stream parses entries the same way: the code is the core's (``mlplatform.stream_group``).
"""

from __future__ import annotations

from mlplatform.stream_group import (
    DEAD_MAXLEN,
    DEAD_SUFFIX,
    INT64_MAX,
    INT64_MIN,
    MAX_TS_US,
    dead_letter_fields,
    dead_letter_stream,
    parse_entry,
)

__all__ = ["DEAD_MAXLEN", "DEAD_SUFFIX", "INT64_MAX", "INT64_MIN", "MAX_TS_US", "dead_letter_fields",
           "dead_letter_stream", "parse_entry"]
