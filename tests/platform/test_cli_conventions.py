"""What every `mlplatform` command does the same way: `--version`, a closed pipe is a normal exit, tables are whole
when the output is not a terminal, library warnings users cannot act on are not printed, and start-up imports
nothing heavy (the time itself is measured in bench/cli.py, not asserted here)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import make_settings, process_environ

MLPLATFORM = Path(sys.executable).parent / "mlplatform"  # the console script a user runs
PROJECT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "feast", "mlflow", "xgboost", "evidently", "pyarrow", "duckdb", "sklearn")


def _noisy_audit_log(settings, records: int = 600) -> None:
    """An audit log whose listing (JSON or table) is far larger than a pipe's 64 KiB buffer."""
    from mlplatform import audit

    for i in range(records):
        audit.record(settings, "bench-noise", target=f"target-{i}", details={"i": i, "pad": "x" * 400})


# --- --version ----------------------------------------------------------------------------------------------------
def test_version_is_the_installed_package_version(cli, tmp_path):
    res = cli(make_settings(tmp_path), ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"mlplatform {version('mlplatform')}"  # oracle: the package metadata
    assert not list(tmp_path.iterdir()), "--version touches no data"


# --- a closed pipe ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [["audit", "--jsonl", "--limit", "1000"], ["audit", "--json", "--limit", "1000"], ["audit", "--limit", "1000"]],
    ids=["json-lines", "json-document", "table"],
)
def test_a_reader_closing_the_pipe_early_is_a_normal_exit(tmp_path, args):
    """`mlplatform audit --jsonl | head -c 100`: the real console script, its stdout read for 100 bytes, then closed."""
    settings = make_settings(tmp_path)
    _noisy_audit_log(settings)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl")) > 4 * 65536  # far more than a pipe buffers
    proc = subprocess.Popen(
        [str(MLPLATFORM), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_environ(settings),
        cwd=tmp_path,
    )
    head = proc.stdout.read(100)
    proc.stdout.close()  # the reader is gone: every further write of the command fails with EPIPE
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0, stderr
    assert len(head) == 100
    assert "Traceback" not in stderr and "error" not in stderr.lower() and "[bold" not in stderr, stderr


def test_a_pipe_left_open_gets_everything(tmp_path):
    """The control of the test above: the same listing read to the end is complete and valid JSON lines."""
    settings = make_settings(tmp_path)
    _noisy_audit_log(settings, records=50)
    done = subprocess.run(
        [str(MLPLATFORM), "audit", "--jsonl", "--limit", "1000"],
        capture_output=True,
        text=True,
        env=process_environ(settings),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum(r["action"] == "bench-noise" for r in rows) == 50


# --- tables when the output is not a terminal ---------------------------------------------------------------------
def test_tables_keep_every_cell_whole_when_not_a_terminal(cli, tmp_path):
    """`pipeline status | cat` used to cut run ids to `2026112…` at 80 columns."""
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n  nap-with-a-rather-long-name:\n    description: one short step\n"
        "    steps:\n      - name: a-step-whose-name-is-long-enough-to-need-room\n        call: sleep\n"
        "        args: {seconds: 0}\n"
    )
    settings = make_settings(tmp_path / "data", pipelines_config=config)
    ran = cli(settings, ["pipeline", "run", "nap-with-a-rather-long-name"])
    assert ran.exit_code == 0, ran.output
    run_id = re.search(r"\(run (\S+)\)", ran.output).group(1)
    status = cli(settings, ["pipeline", "status"])
    assert status.exit_code == 0, status.output
    assert "…" not in status.output
    row = next(line for line in status.output.splitlines() if run_id in line)  # one line, every cell whole
    for cell in ("nap-with-a-rather-long-name", "succeeded"):
        assert cell in row
    assert "a-step-whose-name-is-long-enough-to-need-room" in status.output
    assert max(len(line) for line in status.output.splitlines()) > 80


def test_consoles_are_wide_off_a_terminal_and_terminal_wide_on_one():
    from mlplatform.console import PIPED_WIDTH, CliConsole

    assert CliConsole(file=io.StringIO()).width == PIPED_WIDTH
    assert CliConsole(file=io.StringIO(), force_terminal=True, width=100).width == 100
    on_terminal = CliConsole(file=io.StringIO(), force_terminal=True)
    assert on_terminal.is_terminal and on_terminal.width < PIPED_WIDTH


# --- warnings -----------------------------------------------------------------------------------------------------
def test_known_warnings_stay_silent_after_feast_resets_the_filters():
    """Feast runs `warnings.simplefilter("once", RuntimeWarning)` when imported, ahead of any filter set before."""
    from cli import quiet_known_warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_known_warnings()
        warnings.simplefilter("once", RuntimeWarning)  # what feast/stream_feature_view.py does at import
        warnings.simplefilter("once", DeprecationWarning)  # what feast/feature_store.py does at import
        warnings.warn(
            "Stream feature views are experimental features in alpha development.", RuntimeWarning, stacklevel=1
        )
        warnings.warn(
            "fetch_arrow_table() is deprecated, use to_arrow_table() instead.", DeprecationWarning, stacklevel=1
        )
        warnings.warn("a warning a user can act on", UserWarning, stacklevel=1)
        warnings.warn("an unrelated runtime warning", RuntimeWarning, stacklevel=1)
    assert sorted(str(w.message) for w in shown) == ["a warning a user can act on", "an unrelated runtime warning"]


def test_feast_touching_commands_print_no_library_warnings(world):
    settings = make_settings(world)
    env = process_environ(settings)
    for args in (["features", "validate"], ["apply"]):
        done = subprocess.run([str(MLPLATFORM), *args], capture_output=True, text=True, env=env, cwd=world, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr and "warnings.warn" not in done.stderr, done.stderr
    # control: the same command without the CLI's filters does print Feast's warning (else this test proves nothing)
    bare = subprocess.run(
        [sys.executable, "-c", "from cli import build_app; build_app()(['features', 'validate'])"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=300,
    )
    assert "experimental" in bare.stderr and "RuntimeWarning" in bare.stderr, bare.stderr


# --- start-up -----------------------------------------------------------------------------------------------------
def test_help_imports_no_heavy_library_and_no_settings():
    """`mlplatform --help` assembles every part's commands without pandas, Feast, MLflow, ... or pydantic."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli import build_app\n"
        "res = CliRunner().invoke(build_app(), ['--help'])\n"
        "assert res.exit_code == 0 and 'models' in res.output, res.output\n"
        f"print(sorted(m for m in {HEAVY + ('pydantic_settings',)!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
