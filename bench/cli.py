"""CLI start-up: wall-clock time of whole `mlplatform` processes, against a floor (`python -c pass`, same venv).

    python -m bench.run --only cli [--quick]

Commands: `mlplatform --help`, `mlplatform --version`, `mlplatform models list` on a small registry (3 versions,
one golden), and `mlplatform features push` (one event into Redis through Feast) when a Redis answers at
``REDIS``. Each is run ``N`` times in a fresh process (median and min reported), in two states of Python's
bytecode cache:

- cached: what an installed checkout runs after its first command (Python writes ``__pycache__`` on first import);
  here into a private ``PYTHONPYCACHEPREFIX``, warmed by one run, so the venv is not touched;
- venv as installed: ``PYTHONDONTWRITEBYTECODE=1`` and no cache prefix: modules the install compiled load from
  their ``__pycache__``, the others are compiled from source on every run (``uv pip install`` compiles nothing
  unless asked, so in a venv never written to that is all of site-packages).

Wall time is the goal's measure; the CPU time (user + system) of the process is in the note, because on a shared,
loaded machine wall time also holds the wait for a core (the load average is noted too).

Goals (issue 13): `--help` <= 0.5 s and `models list` <= 1.5 s, whole process, with the cache.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLPLATFORM = Path(sys.executable).parent / "mlplatform"
REDIS = "127.0.0.1:6379,db=13"  # features push writes one customer_realtime key here
GOALS = {"mlplatform --help": 0.5, "mlplatform models list": 1.5}


def _registry(root: Path) -> None:
    """A model registry with three tiny versions (the newest golden), as `models list` reads it."""
    import numpy as np
    import xgboost as xgb

    from mlplatform.models.registry import ModelRegistry
    from mlplatform.settings import Settings

    settings = Settings(_env_file=None, data_dir=root, redis_addr=REDIS, actor="bench")
    registry = ModelRegistry(settings)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    version = None
    for i in range(3):
        booster = xgb.train(
            {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
            xgb.DMatrix(X, label=(X[:, 0] + X[:, i] > 0).astype(int)),
            num_boost_round=5,
        )
        version = registry.register(
            booster,
            feature_names=[f"f{j}" for j in range(4)],
            feature_types=["Float64"] * 4,
            feature_service="fraud_model_v1",
            metrics={"roc_auc": 0.9 + i / 100},
            params={"tune_trials": 0},
            lineage={"fingerprint": f"bench-{i}", "as_of": "2026-10-29T00:00:00+00:00", "rows": 500},
        )
    registry.set_alias("golden", version.version)


def _pushable_world(root: Path) -> bool:
    """Raw data, features and applied definitions for `features push`; False when no Redis answers."""
    from mlplatform.settings import Settings
    from mlplatform.stores import redis_answers

    settings = Settings(_env_file=None, data_dir=root, redis_addr=REDIS, actor="bench")
    if not redis_answers(settings):  # no Redis: the push rows are left out
        return False
    from datetime import UTC, datetime

    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.pipelines import build_features

    generate(WorldSpec(customers=40, days=10, seed=3, start=datetime(2026, 10, 1, tzinfo=UTC)), root)
    build_features(root)
    settings.export_feast_env()
    apply_definitions(settings)
    return True


def _env(root: Path, cache: Path | None) -> dict[str, str]:
    """The subprocess environment: this one's, the bench world's settings, and the bytecode-cache state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        {
            "MLPLATFORM_DATA_DIR": str(root),
            "MLPLATFORM_REDIS_ADDR": REDIS,
            "MLPLATFORM_ACTOR": "bench",
            "MLPLATFORM_REGISTRY": str(root / "registry.db"),
        }
    )
    if cache is None:  # the venv's own __pycache__ (if any), never written: modules without one compile every run
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def _time(argv: list[str], env: dict[str, str], n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of ``n`` runs of ``argv``, each a fresh process (fails loudly if
    the command fails). CPU time is what the command itself costs; wall time also holds waiting for a core on a
    loaded machine."""
    walls, cpus = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        cpus.append(usage.ru_utime + usage.ru_stime)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr[-2000:]}")
    return walls, cpus


def run(quick: bool = False) -> list[dict]:
    """Median and min wall time of each command per bytecode-cache state, and each median over the floor's."""
    n = 5 if quick else 15
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp) / "world"
        root.mkdir()
        _registry(root)
        push = _pushable_world(Path(tmp) / "push")
        commands = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "mlplatform --help": [str(MLPLATFORM), "--help"],
            "mlplatform --version": [str(MLPLATFORM), "--version"],
            "mlplatform models list": [str(MLPLATFORM), "models", "list"],
        }
        for state, cache in (("bytecode cached", Path(tmp) / "pycache"), ("venv as installed", None)):
            env = _env(root, cache)
            runs = dict(commands)
            if push and cache is not None:
                runs["mlplatform features push"] = [
                    str(MLPLATFORM),
                    "features",
                    "push",
                    "--customer-id",
                    "1",
                    "--amount",
                    "9.5",
                    "--merchant-id",
                    "10001",
                ]
            floor = None
            for name, argv in runs.items():
                push_dir = Path(tmp) / "push"
                cmd_env = (
                    env
                    if "push" not in name
                    else {
                        **env,
                        "MLPLATFORM_DATA_DIR": str(push_dir),
                        "MLPLATFORM_REGISTRY": str(push_dir / "registry.db"),
                    }
                )
                if cache is not None:
                    _time(argv, cmd_env, 1)  # warm the cache
                walls, cpus = _time(argv, cmd_env, n if "push" not in name else max(3, n // 3))
                median, best, cpu = statistics.median(walls), min(walls), statistics.median(cpus)
                floor = median if floor is None else floor
                goal = GOALS.get(name)
                note = f"{len(walls)} runs, min {best:.3f}s, CPU {cpu:.3f}s"
                if name != "python -c pass (floor)":
                    note += f", {median / floor:.0f}x the floor"
                if goal is not None and cache is not None:
                    note += f"; goal <= {goal}s: {'met' if median <= goal else 'NOT met'}"
                if name == "mlplatform models list":
                    note += " (3 versions)"
                rows.append(
                    {
                        "benchmark": f"cli start-up ({state})",
                        "metric": f"{name}: median wall time",
                        "value": median,
                        "unit": "s",
                        "note": note,
                    }
                )
        load = os.getloadavg()[0]
        for row in rows:
            row["note"] += f"; load {load:.1f} on {os.cpu_count()} cores"
    return rows


if __name__ == "__main__":  # pragma: no cover
    for row in run(quick="--quick" in sys.argv):
        print(row)
