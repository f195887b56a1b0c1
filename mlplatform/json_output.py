"""The documents the commands print with ``--json`` (docs/cli-json.md): values made JSON-ready in one way.

* times (``datetime``, pandas ``Timestamp``, ``date``) as ISO-8601 strings in UTC (a time without a zone is UTC);
* NaN and infinities as ``null``; numpy scalars as plain numbers; enums as their value; tuples and sets as lists;
* file locations inside the data folder relative to it (``reports/check-....json``), whether given as a ``Path``
  or as a string that is such a path; other paths as they are;
* every string with the secrets of the settings masked (``mlplatform.redact``: passwords in URLs and connection
  strings, the API key, webhook URLs and tokens).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from mlplatform.redact import redact

__all__ = ["dumps", "json_ready"]


def json_ready(value: Any, data_dir: Path | None = None, secrets: Iterable[str] = ()) -> Any:
    """``value`` as plain JSON types (see the module's rules), paths under ``data_dir`` relative to it and each of
    ``secrets`` masked in every string."""
    roots = _roots(data_dir)
    masked = [s for s in secrets if s]
    return _convert(value, roots, masked)


def dumps(doc: Any) -> str:
    """One line of JSON (strict: no NaN) for a document already made ``json_ready``."""
    return json.dumps(doc, allow_nan=False, separators=(",", ":"))


def _roots(data_dir: Path | None) -> list[str]:
    """The data folder as it may be spelled in a path: as given (absolute) and resolved (symlinks followed)."""
    if data_dir is None:
        return []
    spelled = {str(Path(data_dir).expanduser().absolute()), str(Path(data_dir).expanduser().resolve())}
    return sorted((s.rstrip("/") for s in spelled if s not in ("", "/")), key=len, reverse=True)


def _relative(text: str, roots: list[str]) -> str | None:
    """``text`` relative to the data folder if it is a path inside it (``.`` for the folder itself), else None."""
    for root in roots:
        if text == root:
            return "."
        if text.startswith(root + "/"):
            return text[len(root) + 1:]
    return None


def _convert(value: Any, roots: list[str], secrets: list[str]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return _convert(value.value, roots, secrets)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        rel = _relative(value, roots)
        return rel if rel is not None else redact(value, secrets)
    if isinstance(value, PurePath):
        text = str(value)
        rel = _relative(text, roots)
        return rel if rel is not None else redact(text, secrets)
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(_convert(k, roots, secrets)): _convert(v, roots, secrets) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return _convert(asdict(value), roots, secrets)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_convert(v, roots, secrets) for v in items]
    if hasattr(value, "item") and not isinstance(value, bytes):  # a numpy or pandas scalar
        try:
            return _convert(value.item(), roots, secrets)
        except (TypeError, ValueError):
            pass
    if hasattr(value, "isoformat"):  # pandas.Timestamp after .item() and its kin
        return _convert(datetime.fromisoformat(value.isoformat()), roots, secrets)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"), secrets)
    return redact(str(value), secrets)
