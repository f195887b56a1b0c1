"""One redaction helper for every message, log line and response that names a store or a URL.

What counts as a secret: passwords and user names in URLs (``scheme://user:pass@host``), the path and query of
http(s) URLs (webhook tokens live there: ``hooks.slack.com/services/T.../B.../<token>``), ``password=`` and
similar ``key=value`` options (Feast's Redis connection string, SQLAlchemy/PostgreSQL query strings, DSNs), and
any string the caller knows is secret (``settings_secrets``: the Redis password, the API key, webhook URLs).
What stays: scheme, host, port, database, and the last 4 characters of a webhook's path (to tell them apart).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mlplatform.settings import RedisAddress

MASK = "***"
WEB_SCHEMES = frozenset({"http", "https", "ws", "wss"})
SECRET_KEYS = frozenset({
    "password", "passwd", "pass", "pwd", "secret", "token", "access_token", "auth", "api_key", "apikey",
    "key", "sig", "signature", "credential", "credentials", "sslpassword",
})
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|access_token|api[_-]?key|sslpassword)([\"']?\s*[=:]\s*[\"']?)([^\s,;&'\")\]}>]+)"
)
_MIN_SECRET = 4  # shorter "secrets" would mask ordinary words and digits


def redact_url(url: str) -> str:
    """``url`` safe to show: credentials masked; for http(s) the path cut to its last 4 characters and the query
    dropped; for stores (``postgresql://``, ``redis://``, ``sqlite://``...) secret-looking query values masked."""
    trail = ""
    while url and url[-1] in ".,;:)]}":  # sentence punctuation after a URL in free text
        url, trail = url[:-1], url[-1] + trail
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _mask_key_values(re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)) + trail
    if not parts.scheme or not parts.netloc:
        return _mask_key_values(url) + trail
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    hostport = host + (f":{port}" if port is not None else "")
    web = scheme in WEB_SCHEMES
    if parts.username is not None or parts.password is not None:
        user = "" if web or not parts.username else parts.username + ":"
        hostport = f"{user}{MASK}@{hostport}"
    if web:
        tail = parts.path[-4:] if len(parts.path) > 4 else ""
        return f"{parts.scheme}://{hostport}/…{tail}" + trail
    query = urlencode([(k, MASK if k.lower() in SECRET_KEYS else v) for k, v in parse_qsl(parts.query, True)],
                      safe="*")
    return urlunsplit((parts.scheme, hostport, parts.path, query, "")) + trail


def redact_redis_address(addr: str) -> str:
    """Feast's Redis connection string (``host:port[,password=...][,db=N]``, or a ``redis://`` URL) safe to show:
    host, port and database; the password masked, other options left out."""
    if "://" in addr:
        return redact_url(addr.split(",")[0])
    try:
        return redact(str(RedisAddress.parse(addr)))
    except ValueError:
        return redact(addr.split(",")[0])


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (an error message, a log line) with every URL passed through ``redact_url``, ``password=...``-like
    options masked and each of ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    out = str(text)
    for secret in sorted({s for s in _expand(secrets) if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _URL.sub(lambda m: redact_url(m.group(0)), out)
    return _mask_key_values(out)


def settings_secrets(settings: Any) -> list[str]:
    """The secret strings in ``settings``: the Redis password, the admin API key, webhook URLs (whole, and their
    credentials and paths), the passwords of the registries' database URLs."""
    secrets = [settings.serving_api_key or ""]
    try:
        secrets.append(RedisAddress.parse(settings.redis_addr).password or "")
    except ValueError:
        secrets.append(settings.redis_addr)
    for url in settings.webhooks:
        secrets.extend(_url_secrets(url))
    for url in (getattr(settings, "feast_registry_url", None), getattr(settings, "models_backend_url", None)):
        with contextlib.suppress(ValueError):  # database URLs: their password (the user name is no secret)
            secrets.append(urlsplit(url).password or "" if url else "")
    return [s for s in secrets if s]


def _url_secrets(url: str) -> list[str]:
    """A URL's secret parts: itself, its password and user, and (for http) its path, the path's last segment (a
    webhook token) and its query and query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url, parts.password or "", parts.username or ""]
    if parts.scheme.lower() in WEB_SCHEMES:
        last = parts.path.rstrip("/").rpartition("/")[2]
        found += [parts.path if len(parts.path) > 1 else "", last if len(last) >= 8 else "", parts.query]
        found += [v for _, v in parse_qsl(parts.query) if len(v) >= 8]
    return [s for s in found if s]


def _expand(secrets: Iterable[str]) -> Iterable[str]:
    for secret in secrets:
        if secret:
            yield secret
            yield quote(secret, safe="")


def _mask_key_values(text: str) -> str:
    return _KEY_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
