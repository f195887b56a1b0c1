"""Batch scores on another filesystem (MLPLATFORM_SCORES_URI, or an --output URL): the file lands there whole, equal
to what the local default writes for the same window, with its run's metadata (lineage reads it from there); nothing
stays in the local scores folder; a store that refuses the put keeps the local file and says where; an unusable
URL is a clear error (exit 2) before any work.

Oracles: the local default's file read with pandas; the object at the URI read back with plain fsspec + pyarrow.
"""

from __future__ import annotations

import json
import uuid

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from mlplatform.errors import ExitCode, MLPlatformError
from mlplatform.filesystems import Location
from scoring.batch import put_scores, read_scores_metadata, score_window
from tests.conftest import make_settings

RUN_COLUMNS = ("run_id",)  # differs by construction between two runs


def _read(url: str) -> tuple[pd.DataFrame, dict]:
    """The scores object at ``url`` and its run metadata, read with plain fsspec + pyarrow."""
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    return table.to_pandas(), json.loads(table.schema.metadata[b"mlplatform"])


@pytest.fixture(scope="module")
def local_scores(scoring_world):
    w = scoring_world
    result = score_window(w.settings, w.start, w.end, chunk_rows=200)
    return pd.read_parquet(result.path)


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_scores_land_at_the_uri_equal_to_the_local_default(scoring_world, local_scores, tmp_path, scheme):
    w = scoring_world
    url = f"memory://scores-{uuid.uuid4().hex[:8]}" if scheme == "memory" else (tmp_path / "shared").as_uri()
    settings = w.settings.model_copy(update={"scores_uri": url})
    before = set(settings.layout.scores_dir.glob("*"))
    result = score_window(settings, w.start, w.end, chunk_rows=200)
    if scheme == "memory":
        assert str(result.path).startswith(url + "/") and str(result.path).endswith(".parquet")
        written = str(result.path)
    else:  # a file:// folder is the local disk: written in place (temp file, fsync, rename)
        assert result.path.parent == tmp_path / "shared" and result.path.suffix == ".parquet"
        written = result.path.as_uri()
    there, meta = _read(written)
    columns = [c for c in there.columns if c not in RUN_COLUMNS]
    ours = local_scores.sort_values("transaction_id").reset_index(drop=True)
    theirs = there.sort_values("transaction_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(theirs[columns], ours[columns])
    assert set(there["run_id"]) == {result.run_id} and len(there) == result.rows > 100
    assert meta["run_id"] == result.run_id and meta["model_version"] == w.version
    assert read_scores_metadata(result.path) == meta  # lineage reads it back from the URI
    assert set(settings.layout.scores_dir.glob("*")) == before  # nothing left in the local scores folder
    if scheme == "file":
        assert [p.name for p in (tmp_path / "shared").iterdir()] == [str(result.path).rsplit("/", 1)[-1]]


def test_an_output_url_and_a_refused_put(scoring_world, tmp_path, cli):
    w = scoring_world
    url = f"memory://out-{uuid.uuid4().hex[:8]}/nightly/scores.parquet"
    out = cli(w.settings, ["score", "--start", w.start.isoformat(), "--end", w.end.isoformat(), "--output", url])
    assert out.exit_code == 0, out.output
    assert url in out.output
    there, meta = _read(url)
    assert len(there) == meta["rows"] > 100

    class Refusing(MemoryFileSystem):
        def put_file(self, *args, **kwargs):
            raise PermissionError("AccessDenied for key AKIAEXAMPLE password=hunter22")

    local = tmp_path / "scores.parquet"
    local.write_bytes(b"complete scores")
    target = Location(Refusing(skip_instance_cache=True), "/refused", "memory://refused")
    with pytest.raises(MLPlatformError) as caught:
        put_scores(w.settings, local, target, "s.parquet")
    message = str(caught.value)
    assert "memory://refused/s.parquet" in message and str(local) in message and "hunter22" not in message
    assert local.read_bytes() == b"complete scores"  # kept where the message says


@pytest.mark.parametrize(("output", "says"), [
    ("s3://AKIAEXAMPLE:hunter22@bucket/scores.parquet", "pip install s3fs"),
    ("nosuchfs://bucket/scores.parquet", "unknown scheme nosuchfs://"),
    ("memory://bucket/scores.csv", "must end in .parquet"),
])
def test_an_unusable_output_fails_before_any_work(tmp_path, cli, output, says):
    settings = make_settings(tmp_path)  # no data at all: the output is refused first
    out = cli(settings, ["score", "--start", "2026-10-01", "--end", "2026-10-02", "--output", output])
    assert out.exit_code == ExitCode.INVALID_INPUT, out.output
    assert says in out.output and "hunter22" not in out.output and "Traceback" not in out.output
