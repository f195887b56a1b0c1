"""The CLI: bad input gets a one-line message and an exit code, never a traceback."""

from __future__ import annotations

import pytest

from mlplatform.settings import get_settings
from tests.conftest import make_settings


@pytest.fixture()
def run(cli, tmp_path):
    """``run(args)``: ``mlplatform <args>`` on settings whose data folder is the test's tmp_path."""
    return lambda args: cli(make_settings(tmp_path), args)


def test_generate_then_refuse_to_overwrite(tmp_path, run):
    ok = run(["data", "generate", "--customers", "20", "--days", "2", "--seed", "1"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "raw" / "customers.parquet").exists()
    clash = run(["data", "generate", "--customers", "20", "--days", "2", "--seed", "2"])
    assert clash.exit_code == 6
    assert "immutable" in clash.output
    assert "Traceback" not in clash.output


def test_bad_option_values_are_named(tmp_path, run):
    res = run(["data", "generate", "--customers", "3"])
    assert res.exit_code == 2 and "--customers" in res.output and "Traceback" not in res.output
    res = run(["data", "generate", "--start", "not-a-date"])
    assert res.exit_code == 2 and "not-a-date" in res.output


def test_steps_out_of_order_say_what_to_run(tmp_path, run):
    res = run(["features", "build"])
    assert res.exit_code == 3
    assert "mlplatform data generate" in res.output
    res = run(["features", "validate"])
    assert res.exit_code == 4
    assert "customer_activity" in res.output and "no such file" in res.output


def test_env_prints_the_feast_placeholders(tmp_path, run):
    res = run(["env"])
    assert res.exit_code == 0
    for var in ("MLPLATFORM_DATA_DIR", "MLPLATFORM_REDIS_ADDR", "MLPLATFORM_REGISTRY"):
        assert f"export {var}=" in res.output
    yaml_text = (get_settings().feature_repo / "feature_store.yaml").read_text()
    assert all(f"${{{var}}}" in yaml_text for var in ("MLPLATFORM_REDIS_ADDR", "MLPLATFORM_REGISTRY"))


def test_unexpected_errors_are_a_message_not_a_traceback(tmp_path, run):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "manifest.json").write_text("{not json")  # corrupt state a user can end up with
    res = run(["features", "build"])
    assert res.exit_code == 1
    assert "unexpected error" in res.output and "MLPLATFORM_DEBUG" in res.output
    assert "Traceback" not in res.output


def _sha256_of_files(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_since_last_with_nothing_new_leaves_every_file_byte_identical(cli, world):
    """Nothing arrived since the last build: nothing is appended and no feature file is rewritten."""
    import json

    settings = make_settings(world)
    features = world / "features"
    before = _sha256_of_files(features)
    assert {"customer_activity.parquet", "customer_profile.parquet", "_build_state.json"} <= set(before)
    watermark = max(p["end"] for p in json.loads((world / "raw" / "manifest.json").read_text())["periods"])
    for _ in range(2):
        res = cli(settings, ["features", "build", "--since", "last"])
        assert res.exit_code == 0, res.output
        assert f"nothing new since {watermark[:10]} {watermark[11:16]}Z" in res.output, res.output
        assert "rows appended" not in res.output
        assert _sha256_of_files(features) == before


def test_materialize_prints_where_the_data_really_starts(cli, world, redis_addr, redis_db):
    """A first run starts at each view's first event time (read here from the raw files), never at 1970."""
    from tests.oracles import read_raw

    settings = make_settings(world, redis_addr=redis_addr)
    assert cli(settings, ["apply"]).exit_code == 0
    res = cli(settings, ["materialize"])
    assert res.exit_code == 0, res.output
    assert "1970" not in res.output
    raw = read_raw(world)
    expected = {
        "customer_activity": raw["transactions"]["event_timestamp"].min(),  # a row at each transaction
        "customer_realtime": raw["transactions"]["event_timestamp"].min(),
        "merchant_risk": raw["labels"]["label_timestamp"].min(),  # a row as each label arrives
        "customer_profile": raw["customers"]["event_timestamp"].min(),
        "merchant_profile": raw["merchants"]["event_timestamp"].min(),
    }
    starts = {}
    for line in res.output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] in expected:
            starts[cells[0]] = cells[1]
    assert starts == {view: f"{t.tz_convert('UTC'):%Y-%m-%d %H:%M}" for view, t in expected.items()}
