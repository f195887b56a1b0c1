"""`mlplatform score` output joins raw data as it is, and an empty window is refused at once, writing nothing."""

from __future__ import annotations

import pandas as pd

from tests.oracles import read_raw


def test_scores_merge_with_raw_labels_on_transaction_id(scoring_world, cli, tmp_path):
    """The scores' transaction_id has the raw data's type (int64), so a plain merge with the labels works."""
    w = scoring_world
    out = tmp_path / "scores.parquet"
    res = cli(w.settings, ["score", "--start", w.start.isoformat(), "--end", w.end.isoformat(), "--output", str(out)])
    assert res.exit_code == 0, res.output
    scores = pd.read_parquet(out)
    raw = read_raw(w.settings.data_path)
    labels = raw["labels"]
    assert scores["transaction_id"].dtype == labels["transaction_id"].dtype == "int64"
    merged = scores.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id")  # raised with string ids
    tx = raw["transactions"]
    in_window = tx[(tx["event_timestamp"] >= w.start) & (tx["event_timestamp"] < w.end)]
    labeled = {int(t) for t in in_window["transaction_id"]} & {int(t) for t in labels["transaction_id"]}
    assert len(labeled) > 10 and sorted(merged["transaction_id"]) == sorted(labeled)
    merged_tx = scores.merge(tx[["transaction_id", "amount"]], on="transaction_id", suffixes=("", "_raw"))
    assert len(merged_tx) == len(in_window) and (merged_tx["amount"] == merged_tx["amount_raw"]).all()


def test_an_empty_window_fails_fast_naming_the_data_range(scoring_world, cli, tmp_path, monkeypatch):
    """Exit 3 with the window and the data's time range, before the model registry or Feast is opened (that was
    11 s); nothing written."""
    import mlplatform.stores
    import scoring.batch

    def must_not_load(*_args, **_kwargs):
        raise AssertionError("an empty window loaded the model registry or Feast")

    monkeypatch.setattr(scoring.batch, "resolve_model", must_not_load)
    monkeypatch.setattr(mlplatform.stores, "open_feature_store", must_not_load)
    w = scoring_world
    out = tmp_path / "out" / "scores.parquet"
    res = cli(w.settings, ["score", "--start", "2031-01-01", "--end", "2031-01-02", "--output", str(out)])
    assert res.exit_code == 3, res.output
    tx = read_raw(w.settings.data_path)["transactions"]
    first, last = (tx["event_timestamp"].min().tz_convert("UTC"), tx["event_timestamp"].max().tz_convert("UTC"))
    text = " ".join(res.output.split())
    assert "no transactions in the window [2031-01-01T00:00:00+00:00, 2031-01-02T00:00:00+00:00)" in text
    assert first.isoformat() in text and last.isoformat() in text, text
    assert f"{len(tx):,} transactions" in text
    assert "Traceback" not in res.output and "scoring ━" not in res.output  # no progress bar for nothing
    assert not out.exists() and not out.parent.exists()
    assert not (w.settings.data_path / "scores").exists() or not any(
        p.name.startswith("fraud-v") and "20310101" in p.name for p in (w.settings.data_path / "scores").iterdir()
    )
