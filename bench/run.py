"""Run the benchmarks and write bench/results.md (quoted by the README) and bench/results.json.

    python -m bench.run [--quick] [--only features,serving]   (--only cli: start-up of whole `mlplatform` processes)

Each module in MODULES exposes ``run(quick: bool) -> list[dict]`` with rows
{"benchmark", "metric", "value", "unit", "note"}; comparisons are ratios against a floor or peer measured in the
same run, because absolute timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import platform
import re
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.files import write_atomic

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
MODULES = ["features", "training", "serving", "admission", "monitoring", "scoring", "promotion", "cli", "chaos",
           "durability", "reconcile", "streaming", "replay", "queue_scoring", "redis_cluster", "cluster_serving",
           "spark"]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"


def render(results: dict[str, list[dict]], quick: bool) -> str:
    """The results as a markdown table, one section per module."""
    lines = [
        f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({__import__('os').cpu_count()} cores), {'quick' if quick else 'full'} size, by `make bench`._",
        "",
        "| benchmark | metric | value | unit | note |",
        "|---|---|---:|---|---|",
    ]
    for rows in results.values():
        for row in rows:
            value = _fmt(float(row["value"]))
            lines.append(f"| {row['benchmark']} | {row['metric']} | {value} | {row['unit']} | {row.get('note', '')} |")
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    """Replace the README's benchmark section (between the bench markers) with ``table``."""
    if not README.exists():
        return
    text = README.read_text()
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), f"{START}\n{table}{END}", text, flags=re.S)
        README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes -> seconds)")
    parser.add_argument("--only", default="", help="comma-separated module names")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    chosen = [m for m in MODULES if not args.only or m in args.only.split(",")]
    results: dict[str, list[dict]] = {}
    table = ""
    for name in chosen:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                continue
            raise
        t0 = time.perf_counter()
        print(f"== bench {name} ...", flush=True)
        results[name] = module.run(quick=args.quick)
        print(f"== bench {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
        table = save(results, args.quick)  # after each module: a long run keeps what it measured
    print(table)


def save(results: dict, quick: bool) -> str:
    """Merge with the results on disk (so --only refreshes one part), write results.json/.md and the README table.

    The file is read again under an exclusive lock just before writing, so two runs at once (say `--only
    scoring` beside `--only streaming`) each keep the other's rows instead of writing back what they read at start."""
    with open(HERE / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = HERE / "results.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        merged = {**previous.get("results", {}), **results}
        merged = {m: merged[m] for m in MODULES if m in merged}
        write_atomic(path, json.dumps({"quick": quick, "results": merged}, indent=2))
        table = render(merged, quick)
        write_atomic(HERE / "results.md", "# Benchmark results\n\n" + table)
        update_readme(table)
    return table


if __name__ == "__main__":
    main()
