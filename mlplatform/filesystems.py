"""Folders that may live on another filesystem (feature logs, scores, reports): a local path, ``file://...``,
``memory://...`` (fsspec's in-memory filesystem) or an object store (``s3://bucket/prefix``), opened through fsspec
in one place.

A ``Location`` is one folder on one filesystem; readers list and read through it (``Location.fs`` is an fsspec
filesystem pyarrow reads Parquet through), writers write whole files through it:

* on the local filesystem (a plain path or ``file://``) through ``mlplatform.files.atomic_path``: a temp file,
  fsync, rename, so a reader sees the old file or the new one, never half of one;
* anywhere else as one put of the complete object (an object store never shows a half-written object).

``Location.uri`` is what messages and logs show: credentials in the URI are masked (``mlplatform.redact``).
An unknown scheme, or one whose fsspec implementation is not installed (``s3://`` needs ``s3fs``), is an
``InvalidInputError`` naming the setting and what to install.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.errors import InvalidInputError
from mlplatform.files import atomic_path
from mlplatform.layout import DataLayout
from mlplatform.uris import LOCAL_SCHEMES, uri_problem, url_scheme


@dataclass(frozen=True)
class Location:
    """A folder on one filesystem: ``root`` in ``fs``'s own path form; ``local`` is the folder when it is on the local
    filesystem (then writes are atomic renames with fsync); ``uri`` is it as messages show it (no credentials)."""

    fs: Any = field(repr=False, compare=False)  # an fsspec AbstractFileSystem
    root: str = field(repr=False)  # an object store path may carry what the URI masks
    uri: str
    local: Path | None = None

    @property
    def is_local(self) -> bool:
        """Whether the folder is on the local filesystem."""
        return self.local is not None

    def path(self, name: str = "") -> str:
        """``name`` (relative, ``/``-separated) inside the folder, in the filesystem's path form."""
        name = str(name).strip("/")
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def show(self, name: str = "") -> str:
        """``name`` inside the folder as messages show it: the local path, or the URI (no credentials)."""
        if self.local is not None:
            return str(self.local / name) if name else str(self.local)
        name = str(name).strip("/")
        return f"{self.uri.rstrip('/')}/{name}" if name else self.uri

    def file(self, name: str) -> Path | str:
        """``name`` inside the folder: a ``Path`` on the local filesystem, else its URI (no credentials)."""
        return self.local / name if self.local is not None else self.show(name)

    def name_of(self, path: str) -> str:
        """A path ``fs`` returned (from ``glob``), relative to the folder."""
        root = self.root.rstrip("/") + "/"
        text = str(path)
        return text[len(root):] if text.startswith(root) else text.lstrip("/")

    # -- reading ----------------------------------------------------------------------------------------------------
    def glob(self, pattern: str) -> list[str]:
        """Names (relative to the folder) of the files matching ``pattern`` (``*`` within one level), sorted."""
        try:
            found = self.fs.glob(self.path(pattern))
        except FileNotFoundError:
            return []
        return sorted(self.name_of(p) for p in found)

    def is_file(self, name: str) -> bool:
        """Whether ``name`` is a file in the folder."""
        try:
            return bool(self.fs.isfile(self.path(name)))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def read_bytes(self, name: str) -> bytes:
        """The content of ``name`` (FileNotFoundError when absent)."""
        return self.fs.cat_file(self.path(name))

    def open_input(self, name: str):
        """``name`` opened for binary reading (a file object pyarrow can read)."""
        return self.fs.open(self.path(name), "rb")

    # -- writing ----------------------------------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes | str) -> Path | str:
        """Replace ``name`` with ``data`` (text as UTF-8) whole: atomically on the local filesystem, one put
        elsewhere; returns the file (``file``)."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if self.local is not None:
            with atomic_path(self.local / name) as tmp:
                tmp.write_bytes(payload)
        else:
            self.fs.pipe_file(self.path(name), payload)
        return self.file(name)

    def put_file(self, source: Path, name: str) -> Path | str:
        """Copy the complete local file ``source`` to ``name``: atomically on the local filesystem (temp file, fsync,
        rename), as one put (a multipart upload for a large file) elsewhere; returns the file (``file``)."""
        if self.local is not None:
            with atomic_path(self.local / name) as tmp:
                shutil.copyfile(source, tmp)
        else:
            parent = self.path(name).rsplit("/", 1)[0]
            with contextlib.suppress(OSError, NotImplementedError):
                self.fs.makedirs(parent, exist_ok=True)  # a no-op on object stores; the memory filesystem wants it
            self.fs.put_file(str(source), self.path(name))
        return self.file(name)


def local_location(folder: Path) -> Location:
    """The local folder ``folder`` as a Location."""
    from fsspec.implementations.local import LocalFileSystem

    folder = Path(folder).expanduser().resolve()
    return Location(LocalFileSystem(), folder.as_posix(), str(folder), folder)


def as_location(folder: Path | str | Location) -> Location:
    """``folder`` as a Location: a Location as it is, a path or URI opened (``open_location``)."""
    return folder if isinstance(folder, Location) else open_location(folder, None)


def open_location(value: str | Path | None, default: Path | None, setting: str = "the location") -> Location:
    """The folder ``value`` names (a path or a URL fsspec knows), or the local folder ``default`` when ``value`` is
    unset. A clear ``InvalidInputError`` naming ``setting`` for an unknown scheme or a missing implementation."""
    from mlplatform.redact import redact, redact_url

    text = str(value).strip() if value is not None else ""
    if not text:
        if default is None:
            raise InvalidInputError(f"{setting} is not set")
        return local_location(default)
    scheme = url_scheme(text)
    if scheme is None:
        return local_location(Path(text))
    if scheme in LOCAL_SCHEMES:
        from fsspec.implementations.local import LocalFileSystem

        return local_location(Path(LocalFileSystem._strip_protocol(text)))
    shown = redact_url(text)
    problem = uri_problem(text)
    if problem is not None:
        raise InvalidInputError(f"{setting}={shown}: {problem}")
    try:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(text)
    except Exception as exc:  # noqa: BLE001 - any failure to open names the setting, never a traceback
        raise InvalidInputError(f"{setting}={shown} cannot be opened: {type(exc).__name__}: {redact(str(exc))}") \
            from None
    return Location(fs, str(root).rstrip("/") or str(root), shown.rstrip("/"), None)


def open_file(value: str | Path, setting: str = "the file") -> tuple[Location, str]:
    """The folder holding the file ``value`` (a path or a URL) and the file's name in it."""
    text = str(value).strip()
    if url_scheme(text) is None or url_scheme(text) in LOCAL_SCHEMES:
        path = Path(open_location(text, None, setting).root)
        return local_location(path.parent), path.name
    parent, _, name = text.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise InvalidInputError(f"{setting}: {text.split('://', 1)[0]}:// needs a file name after the folder")
    return open_location(parent, None, setting), name


def feature_logs_location(layout: DataLayout) -> Location:
    """Where monitoring reads the feature logs from (and the service ships them to): ``feature_logs_uri``, or the
    local ``feature_logs_dir``."""
    return open_location(layout.feature_logs_uri, layout.feature_logs_dir, "MLPLATFORM_FEATURE_LOGS_URI")


def scores_location(layout: DataLayout) -> Location:
    """Where batch scores go: ``scores_uri``, or the local ``scores_dir``."""
    return open_location(layout.scores_uri, layout.scores_dir, "MLPLATFORM_SCORES_URI")


def reports_location(layout: DataLayout) -> Location:
    """Where monitoring reports and model pages go and are read from: ``reports_uri``, or ``reports_dir``."""
    return open_location(layout.reports_uri, layout.reports_dir, "MLPLATFORM_REPORTS_URI")
