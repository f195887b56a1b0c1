"""Which folder URLs the platform can open (``MLPLATFORM_FEATURE_LOGS_URI``, ``..._SCORES_URI``, ``..._REPORTS_URI``):
the scheme of a URL and why it cannot be used, without opening anything (``mlplatform.filesystems`` opens them).
A leaf module: the settings check their URLs with it."""

from __future__ import annotations

from pathlib import Path

LOCAL_SCHEMES = frozenset({"file", "local"})
# what to install for an object store's scheme (versions matching the locked fsspec)
INSTALL_HINTS = {"s3": "s3fs==2026.9.0", "s3a": "s3fs==2026.9.0", "gs": "gcsfs==2026.9.0", "gcs": "gcsfs==2026.9.0",
                 "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
SUPPORTED = "a folder path, file:///..., memory://..., s3://bucket/prefix (with s3fs), or another fsspec URL"


def url_scheme(text: str) -> str | None:
    """The URL scheme of ``text`` (lower case), None for a plain path (Windows drive letters included)."""
    head, sep, _ = str(text).strip().partition("://")
    if not sep or len(head) < 2 or not head.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return None
    return head.lower()


def uri_problem(value: str | Path | None) -> str | None:
    """Why ``value`` cannot name a folder (an unknown scheme, or its fsspec implementation is not installed), never
    quoting it; None when it can (unset, a path, ``file://``, or a scheme whose implementation imports)."""
    scheme = url_scheme(str(value)) if value is not None else None
    if scheme is None or scheme in LOCAL_SCHEMES:
        return None
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:  # fsspec's own words, e.g. "Install s3fs to access S3" (never the URL)
        package = INSTALL_HINTS.get(scheme, "the fsspec implementation of that scheme")
        return f"the {scheme}:// filesystem is not installed ({exc}); run `pip install {package}`, or use {SUPPORTED}"
    except ValueError:
        return f"unknown scheme {scheme}://; use {SUPPORTED}"
    return None
