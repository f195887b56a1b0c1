"""`--json` on the commands that report state (docs/cli-json.md): one JSON document on stdout and nothing else, the
same values the table shows, the same exit code as without it, errors as `{"error": ...}`, no secret, times as
ISO-8601 UTC and paths in the data folder relative to it.

Oracles: the registry read through ModelRegistry, the audit log and the pipeline run records read back as plain
files, the file a test removed, values written by hand.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mlplatform.console import JsonOpt, console, emit_json, friendly
from mlplatform.errors import DataNotFoundError
from mlplatform.json_output import json_ready
from tests.conftest import make_settings, process_environ

API_KEY = "planted-api-key-4321"
REDIS_PASSWORD = "planted-redis-pass-8765"


def _doc(res) -> dict:
    """The one JSON document on a command's stdout (json.loads fails on anything else there)."""
    assert res.stdout.endswith("\n") and res.stdout.count("\n") == 1, res.stdout
    return json.loads(res.stdout)


def _both(cli, settings, args: list[str]):
    """The command without and with --json; their exit codes must be equal."""
    table, doc = cli(settings, args), cli(settings, [*args, "--json"])
    assert table.exit_code == doc.exit_code, (table.output, doc.output)
    return table, doc


# --- the conversion ------------------------------------------------------------------------------------------------
def test_values_are_made_json_ready_in_one_way(tmp_path):
    data = tmp_path / "data"
    doc = json_ready({
        "naive": datetime(2026, 11, 1, 12, 30),
        "zoned": datetime(2026, 11, 1, 13, 30, tzinfo=UTC) + timedelta(0),
        "cet": datetime.fromisoformat("2026-11-01T14:30:00+01:00"),
        "nan": float("nan"), "inf": math.inf, "np_int": np.int64(7), "np_float": np.float32(0.5),
        "inside": data / "reports" / "check-1.json", "inside_text": f"{data}/audit/audit.jsonl", "root": data,
        "outside": Path("/opt/elsewhere/file"), "free_text": f"connect to redis://:{REDIS_PASSWORD}@h:6379/0 now",
        "secret": f"key {API_KEY} was used", "nested": [{"t": (1, 2)}],
    }, data, [API_KEY, REDIS_PASSWORD])
    assert doc["naive"] == "2026-11-01T12:30:00+00:00"  # no zone: UTC
    assert doc["zoned"] == "2026-11-01T13:30:00+00:00" and doc["cet"] == "2026-11-01T13:30:00+00:00"
    assert doc["nan"] is None and doc["inf"] is None
    assert doc["np_int"] == 7 and type(doc["np_int"]) is int and doc["np_float"] == 0.5
    assert doc["inside"] == "reports/check-1.json" and doc["inside_text"] == "audit/audit.jsonl"
    assert doc["root"] == "." and doc["outside"] == "/opt/elsewhere/file"
    assert REDIS_PASSWORD not in json.dumps(doc) and API_KEY not in json.dumps(doc)
    assert doc["secret"] == "key *** was used" and doc["nested"] == [{"t": [1, 2]}]
    json.dumps(doc, allow_nan=False)  # strict JSON


# --- models list -----------------------------------------------------------------------------------------------
def _register_tiny(settings, registry, seed: int, metrics: dict) -> int:
    """A tiny real XGBoost model over two features, registered with ``metrics``."""
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0.5).astype(np.int8)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "seed": seed, "nthread": 1},
                        xgb.DMatrix(x, label=y), num_boost_round=5)
    path = settings.data_path / f"train-{seed}.parquet"
    pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "is_fraud": y}).to_parquet(path)
    mv = registry.register(booster, feature_names=["x1", "x2"], feature_types=["float", "float"],
                           feature_service="tiny", metrics=metrics, params={"tune_trials": seed - 1},
                           lineage={"fingerprint": f"fp{seed}", "as_of": f"2026-10-2{seed}T00:00:00+00:00",
                                    "rows": 200 * seed}, training_set_path=path)
    return mv.version


def test_models_list(tmp_path, cli):
    from mlplatform.models.registry import ModelRegistry

    settings = make_settings(tmp_path, models_dir=tmp_path / "models")
    table, empty = _both(cli, settings, ["models", "list"])
    assert table.exit_code == 0 and "no models registered yet" in table.output
    assert _doc(empty) == {"model_name": settings.model_name, "golden": None, "challenger": None,
                           "previous_golden": None, "versions": []}

    registry = ModelRegistry(settings)
    first = _register_tiny(settings, registry, 1, {"roc_auc": 0.81234, "pr_auc": 0.4, "log_loss": 0.3})
    second = _register_tiny(settings, registry, 2, {"roc_auc": 0.9, "oracle_roc_auc": 0.95})
    registry.set_alias("golden", first)
    registry.set_alias("challenger", second)

    table, listing = _both(cli, settings, ["models", "list"])
    assert table.exit_code == 0, table.output
    doc = _doc(listing)
    truth = {v.version: v for v in ModelRegistry(settings).list_versions()}  # the registry, read on its own
    assert [v["version"] for v in doc["versions"]] == sorted(truth) == [first, second]
    assert (doc["golden"], doc["challenger"], doc["previous_golden"]) == (first, second, None)
    assert doc["golden"] == ModelRegistry(settings).golden().version
    for v in doc["versions"]:
        mv = truth[v["version"]]
        assert v["metrics"] == mv.metrics and sorted(v["aliases"]) == sorted(mv.aliases)
        assert v["golden"] is (v["version"] == first) and v["feature_service"] == "tiny"
        assert datetime.fromisoformat(v["created_at"]) == mv.created_at and v["created_at"].endswith("+00:00")
        assert (v["as_of"], v["rows"], v["fingerprint"]) == (mv.lineage["as_of"], mv.lineage["rows"],
                                                            mv.lineage["fingerprint"])
    assert [v["tuned_trials"] for v in doc["versions"]] == [None, 1]
    # the table shows the same values
    rows = {int(line.split("│")[1]): line for line in table.output.splitlines()
            if re.match(r"^\s*│\s*\d+\s*│", line)}
    assert set(rows) == {first, second}
    assert "0.8123" in rows[first] and "golden" in rows[first] and "200" in rows[first]
    assert "0.9000" in rows[second] and "0.9500" in rows[second] and "1 trials" in rows[second]

    # as cheap as the table: the registry's SQLite file is read without MLflow, XGBoost, Feast or pandas
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom cli import build_app\n"
            "res = CliRunner().invoke(build_app(), ['models', 'list', '--json'])\n"
            "sys.stdout.write(res.stdout)\n"
            "heavy = ('feast', 'xgboost', 'mlflow', 'pandas', 'evidently')\n"
            "sys.stderr.write(f'exit {res.exit_code} loaded {sorted(m for m in heavy if m in sys.modules)}')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=process_environ(settings))
    assert done.stderr.endswith("exit 0 loaded []"), done.stderr
    assert json.loads(done.stdout) == doc


# --- audit -----------------------------------------------------------------------------------------------------
def test_audit(tmp_path, cli):
    from mlplatform.audit import audit_path, record

    settings = make_settings(tmp_path, actor="alice", serving_api_key=API_KEY,
                             redis_addr=f"127.0.0.1:1,password={REDIS_PASSWORD}")
    record(settings, "apply", "registry", details={"feature_views": ["a", "b"]})
    record(settings, "promote", "model fraud v2", reason=f"ok'd with key {API_KEY}", actor="bob")
    record(settings, "rollback", "model fraud v1", reason="bad latency", channel="api")

    table, listing = _both(cli, settings, ["audit"])
    assert table.exit_code == 0, table.output
    doc = _doc(listing)
    on_disk = [json.loads(line) for line in audit_path(settings).read_text().splitlines()]  # the log itself
    assert doc["count"] == len(doc["records"]) == len(on_disk) == 3
    assert f"audit log ({doc['count']} shown)" in table.output
    for got, raw in zip(doc["records"], on_disk, strict=True):
        assert {k: got[k] for k in ("time", "actor", "action", "target", "channel", "details")} == {
            k: raw[k] for k in ("time", "actor", "action", "target", "channel", "details")}
        assert got["time"][:19] in table.output and got["target"] in table.output
    assert doc["records"][1]["reason"] == "ok'd with key ***"  # the planted API key is masked
    assert API_KEY not in listing.stdout and REDIS_PASSWORD not in listing.stdout
    assert doc["log"] == str(audit_path(settings).relative_to(settings.data_path)) == "audit/audit.jsonl"
    assert doc["filters"] == {"action": None, "actor": None, "channel": None, "since": None, "limit": 50}

    # filters: the same selection as the table, and as the log filtered here by hand
    table, only = _both(cli, settings, ["audit", "--action", "promote", "--since", "now-1h", "--limit", "1"])
    doc = _doc(only)
    family = [r for r in on_disk if r["action"] in ("promote", "force_promote", "promote_refused", "rollback")]
    assert [r["target"] for r in doc["records"]] == [family[-1]["target"]] == ["model fraud v1"]
    assert "model fraud v1" in table.output and "model fraud v2" not in table.output
    since = datetime.fromisoformat(doc["filters"]["since"])
    assert since.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - timedelta(hours=1) - since) < timedelta(
        minutes=5)

    # nothing matches: an empty list, exit 0 like the table
    _, none = _both(cli, settings, ["audit", "--actor", "nobody"])
    assert none.exit_code == 0 and _doc(none)["records"] == [] and _doc(none)["count"] == 0


def test_errors_are_a_json_document_with_the_same_exit_code(tmp_path, cli):
    settings = make_settings(tmp_path)
    table, bad = _both(cli, settings, ["audit", "--since", "not-a-time"])
    assert bad.exit_code == 2
    err = _doc(bad)["error"]
    assert err["type"] == "InvalidInputError" and err["exit_code"] == 2 and "not-a-time" in err["message"]
    assert err["message"] in " ".join(bad.stderr.split()) and err["message"] in " ".join(table.stderr.split())
    assert table.stdout == ""  # without --json the message is on stderr only

    both = cli(settings, ["audit", "--json", "--jsonl"])
    assert both.exit_code == 2 and _doc(both)["error"]["exit_code"] == 2

    # monitoring with no served request at all: exit 3 (nothing to check), as a document too
    table, empty = _both(cli, settings, ["monitor", "check"])
    assert empty.exit_code == 3
    err = _doc(empty)["error"]
    assert err == {"type": "EmptyLogWindow", "message": err["message"], "exit_code": 3}
    assert "no served requests were logged" in err["message"] and "no served requests were logged" in table.output

    # a model version that does not exist: the registry's own "not found"
    lineage_table, lineage = _both(cli, settings, ["lineage", "golden"])
    assert lineage.exit_code == lineage_table.exit_code != 0
    assert _doc(lineage)["error"]["exit_code"] == lineage.exit_code


# --- pipeline status -------------------------------------------------------------------------------------------
def test_pipeline_status(tmp_path, cli):
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n"
        "  nap:\n    steps:\n      - {name: doze, call: sleep, args: {seconds: 0}}\n"
        "  broken:\n    steps:\n      - {name: doze, call: sleep, args: {seconds: 0}}\n"
        "      - {name: missing, call: no_such_part.step}\n"
    )
    settings = make_settings(tmp_path / "data", pipelines_config=config)
    table, none = _both(cli, settings, ["pipeline", "status"])
    assert none.exit_code == 0 and _doc(none) == {"pipeline": None, "limit": 10, "runs": []}

    assert cli(settings, ["pipeline", "run", "nap"]).exit_code == 0
    assert cli(settings, ["pipeline", "run", "broken"]).exit_code == 1

    table, status = _both(cli, settings, ["pipeline", "status"])
    assert status.exit_code == 0, status.output
    doc = _doc(status)
    files = [json.loads(p.read_text()) for p in (settings.data_path / "pipelines" / "runs").glob("*.json")]
    files.sort(key=lambda r: r["started_at"], reverse=True)  # the run records as written, newest first
    assert [r["run_id"] for r in doc["runs"]] == [r["run_id"] for r in files]
    assert [(r["pipeline"], r["status"]) for r in doc["runs"]] == [("broken", "failed"), ("nap", "succeeded")]
    for got, raw in zip(doc["runs"], files, strict=True):
        assert {k: v for k, v in got.items() if k not in ("steps", "config")} == {
            k: v for k, v in raw.items() if k not in ("steps", "config")}
        assert [s["status"] for s in got["steps"]] == [s["status"] for s in raw["steps"]]
        assert got["run_id"] in table.output
    assert doc["runs"][0]["failed_step"] == "missing" and "no_such_part" in doc["runs"][0]["steps"][1]["error"]
    assert all("traceback" not in s for r in doc["runs"] for s in r["steps"])

    _, one = _both(cli, settings, ["pipeline", "status", "nap", "--limit", "1"])
    assert [r["pipeline"] for r in _doc(one)["runs"]] == ["nap"] and _doc(one)["pipeline"] == "nap"


# --- features validate -----------------------------------------------------------------------------------------
def test_features_validate(world, cli):
    settings = make_settings(world)
    table, ok = _both(cli, settings, ["features", "validate"])
    assert ok.exit_code == 0 and _doc(ok) == {"ok": True, "problems": []} and "ok:" in table.output

    removed = settings.layout.features_dir / "merchant_risk.parquet"
    removed.unlink()
    table, bad = _both(cli, settings, ["features", "validate"])
    assert bad.exit_code == 4, bad.output  # ExitCode.DEFINITION, as without --json
    doc = _doc(bad)
    assert doc["ok"] is False and doc["problems"]
    relative = str(removed.relative_to(settings.data_path))
    assert {p["file"] for p in doc["problems"]} == {relative} == {"features/merchant_risk.parquet"}
    assert all(p["found"].startswith("no such file") for p in doc["problems"])
    assert f"{len(doc['problems'])} definition problem(s)" in table.output
    assert bad.stderr.count(" - ") == 0 and table.stderr.count("  - ") == len(doc["problems"])


# --- --help says it ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["models", "list"], ["monitor", "skew"], ["monitor", "consistency"],
                                  ["monitor", "quality"], ["monitor", "check"], ["pipeline", "status"], ["audit"],
                                  ["lineage"], ["stream", "status"], ["features", "validate"]])
def test_every_state_command_takes_json(cli, tmp_path, args):
    res = cli(make_settings(tmp_path), [*args, "--help"])
    assert res.exit_code == 0 and "--json" in res.output and "docs/cli-json.md" in " ".join(res.output.split())


# --- the mechanism: stdout is the document's alone --------------------------------------------------------------
def test_what_a_json_command_prints_along_the_way_goes_to_stderr(tmp_path, settings_env):
    settings_env(make_settings(tmp_path))
    app = typer.Typer()

    @app.command()
    @friendly
    def report(as_json: JsonOpt = False, fail: bool = False) -> None:
        print("progress from a library")
        console.print("a note for people")
        if fail:
            raise DataNotFoundError(f"nothing under {tmp_path}/x yet")
        if as_json:
            emit_json({"when": datetime(2026, 1, 1), "where": tmp_path / "x"})
        else:
            console.print("the table")

    res = CliRunner().invoke(app, ["--json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == '{"when":"2026-01-01T00:00:00+00:00","where":"x"}\n'
    assert "progress from a library" in res.stderr and "a note for people" in res.stderr
    plain = CliRunner().invoke(app, [])
    assert plain.exit_code == 0 and "progress from a library" in plain.stdout and "the table" in plain.stdout

    failed = CliRunner().invoke(app, ["--json", "--fail"])
    assert failed.exit_code == 3  # DataNotFoundError's code, as without --json
    assert json.loads(failed.stdout) == {"error": {"type": "DataNotFoundError", "exit_code": 3,
                                                   "message": f"nothing under {tmp_path}/x yet"}}
    assert "nothing under" in failed.stderr
    assert CliRunner().invoke(app, ["--fail"]).stdout.strip() == "progress from a library\na note for people"
