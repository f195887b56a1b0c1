"""The on-demand features (``mlplatform.features.on_demand``): the vectorized form equals the row-by-row definition,
on the edge cases and on random rows, whatever shape the inputs come in; and Feast's two entry points into the
registered view (``transform_arrow``: historical and online retrieval; ``transform_dict``: the serving reader) give
the same values.

Oracle: ``reference`` below is the row-by-row definition as it was first written (python mode), kept verbatim:
independent of the code under test. It uses ``math.log1p``, which differs from numpy's in the last bit for a few
percent of amounts (both forms under test use numpy's, so they agree exactly with each other): ``log_amount`` is
compared with the reference to 2 ulp, everything else exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlplatform.features.on_demand import (
    INPUTS,
    OUTPUTS,
    ROW_FORM_MAX_ROWS,
    context_frame,
    context_rows,
    frame_to_lists,
    transaction_context,
)


def reference(inputs: dict) -> dict:
    """The original python-mode definition of feature_repo/on_demand.py, row by row (the oracle)."""
    out: dict = {k: [] for k in OUTPUTS}
    for amount, ts, mean7, last, home, country in zip(
        inputs["amount"], inputs["transaction_ts"], inputs["amount_mean_7d"], inputs["last_txn_epoch"],
        inputs["home_country"], inputs["country"], strict=True,
    ):
        hour = (int(ts) // 3600) % 24
        out["log_amount"].append(math.log1p(amount))
        out["amount_vs_mean_7d"].append(amount / mean7 if mean7 else None)
        out["hour_of_day"].append(hour)
        out["is_night"].append(int(hour < 6))
        out["is_foreign"].append(None if not home or not country else int(home != country))
        out["seconds_since_last_txn"].append(None if last is None else int(ts) - int(last))
    return out


H = 3600
EDGES = {  # one row per case: (amount, transaction_ts, amount_mean_7d, last_txn_epoch, home_country, country)
    "zero mean": (50.0, 1_790_000_000, 0.0, 1_789_990_000, "FR", "FR"),
    "missing mean": (50.0, 1_790_000_000, None, 1_789_990_000, "FR", "DE"),
    "missing profile (home)": (12.5, 1_790_000_000, 20.0, 1_789_990_000, None, "DE"),
    "missing profile (merchant)": (12.5, 1_790_000_000, 20.0, 1_789_990_000, "FR", None),
    "missing both profiles": (12.5, 1_790_000_000, 20.0, None, None, None),
    "empty country": (12.5, 1_790_000_000, 20.0, 1_789_990_000, "", "DE"),
    "no previous transaction": (80.0, 1_790_000_000, 40.0, None, "GB", "GB"),
    "previous at the same second": (80.0, 1_790_000_000, 40.0, 1_790_000_000, "GB", "GB"),
    "amount 0": (0.0, 1_790_000_000, 40.0, 1_789_000_000, "GB", "US"),
    "tiny amount": (1e-12, 1_790_000_000, 3.0, 1_789_000_000, "GB", "US"),
    "huge amount": (9.5e12, 1_790_000_000, 3.0, 1_789_000_000, "GB", "US"),
    "negative mean": (10.0, 1_790_000_000, -4.0, 1_789_000_000, "GB", "US"),
    "midnight": (10.0, 20_000 * 24 * H, 4.0, 0, "FR", "FR"),
    "a second before midnight": (10.0, 20_000 * 24 * H - 1, 4.0, 0, "FR", "FR"),
    "05:59:59 (still night)": (10.0, 20_000 * 24 * H + 6 * H - 1, 4.0, 0, "FR", "FR"),
    "06:00:00 (day)": (10.0, 20_000 * 24 * H + 6 * H, 4.0, 0, "FR", "FR"),
    "epoch 0": (10.0, 0, 4.0, 0, "FR", "FR"),
    "before 1970": (10.0, -1, 4.0, -7200, "FR", "FR"),
}


def edge_inputs() -> dict[str, list]:
    columns = list(zip(*EDGES.values(), strict=True))
    return {name: list(values) for name, values in zip(INPUTS, columns, strict=True)}


def arrow_frame(inputs: dict[str, list]) -> pd.DataFrame:
    """The inputs as Feast's pandas-mode view gets them: Arrow (typed as the registry types them) to pandas."""
    types = {"amount": pa.float64(), "transaction_ts": pa.int64(), "amount_mean_7d": pa.float64(),
             "last_txn_epoch": pa.int64(), "home_country": pa.string(), "country": pa.string()}
    return pa.table({k: pa.array(inputs[k], types[k]) for k in INPUTS}).to_pandas()


def assert_matches_reference(got: dict[str, list], inputs: dict[str, list]) -> None:
    expected = reference(inputs)
    for name in OUTPUTS:
        for i, (g, e) in enumerate(zip(got[name], expected[name], strict=True)):
            if e is None:
                assert g is None, (name, i, g)
            elif name == "log_amount":
                assert g is not None and abs(g - e) <= 2 * math.ulp(e), (name, i, g, e)
            else:
                assert g == e and type(g) is type(e), (name, i, g, e)


def test_edge_cases_equal_the_row_by_row_definition():
    inputs = edge_inputs()
    rows = context_rows(inputs)
    frame = frame_to_lists(context_frame(arrow_frame(inputs)))
    assert_matches_reference(rows, inputs)
    assert_matches_reference(frame, inputs)
    assert rows == frame  # the two forms agree exactly, log1p included
    # the cases are what they say: the hour edges and the empties really came out as written
    case = dict(zip(EDGES, range(len(EDGES)), strict=True))
    assert rows["hour_of_day"][case["a second before midnight"]] == 23 and rows["hour_of_day"][case["midnight"]] == 0
    assert rows["is_night"][case["05:59:59 (still night)"]] == 1 and rows["is_night"][case["06:00:00 (day)"]] == 0
    assert rows["amount_vs_mean_7d"][case["zero mean"]] is None and rows["is_foreign"][case["empty country"]] is None
    assert rows["log_amount"][case["amount 0"]] == 0.0 and rows["amount_vs_mean_7d"][case["amount 0"]] == 0.0
    assert rows["hour_of_day"][case["before 1970"]] == 23


def test_frame_output_types_are_the_views_schema():
    out = context_frame(arrow_frame(edge_inputs()))
    assert list(out.columns) == list(OUTPUTS)
    assert [str(out[c].dtype) for c in OUTPUTS] == ["float64", "float64", "Int64", "Int64", "Int64", "Int64"]
    as_arrow = pa.Table.from_pandas(out)  # what Feast appends to the retrieval: nulls, not NaN
    assert as_arrow.schema.types == [pa.float64()] * 2 + [pa.int64()] * 4
    assert as_arrow["amount_vs_mean_7d"].null_count == 2 and as_arrow["seconds_since_last_txn"].null_count == 2


def test_nan_and_missing_are_the_same_thing():
    """A NaN mean (pandas' missing float) is missing, as a null is: no ratio; a NaN amount gives no amount features."""
    nan = float("nan")
    inputs = {"amount": [10.0, nan], "transaction_ts": [100_000, 100_000], "amount_mean_7d": [nan, 2.0],
              "last_txn_epoch": [None, None], "home_country": [nan, "FR"], "country": ["FR", "FR"]}
    rows = context_rows(inputs)
    assert rows["amount_vs_mean_7d"] == [None, None] and rows["log_amount"][1] is None
    assert rows["is_foreign"] == [None, 0]
    assert frame_to_lists(context_frame(pd.DataFrame(inputs))) == rows


def test_input_shapes_give_the_same_answers():
    """Arrow-typed frames, nullable-integer frames, object frames, short and long mappings of lists."""
    rng = np.random.default_rng(4)
    n = ROW_FORM_MAX_ROWS + 500
    inputs = random_inputs(rng, n)
    expected = context_rows(inputs)
    assert_matches_reference(expected, inputs)
    assert transaction_context(inputs) == expected  # long mapping: through the frame form
    assert transaction_context({k: v[:50] for k, v in inputs.items()}) == {k: v[:50] for k, v in expected.items()}
    frames = [arrow_frame(inputs), pd.DataFrame(inputs, dtype=object),
              arrow_frame(inputs).astype({"transaction_ts": "Int64", "last_txn_epoch": "Int64"})]
    for frame in frames:
        assert frame_to_lists(transaction_context(frame)) == expected


def random_inputs(rng: np.random.Generator, n: int) -> dict[str, list]:
    """Realistic rows with every kind of gap, and edge values mixed in."""
    amount = np.round(rng.lognormal(3.3, 1.2, n), 2)
    amount[rng.random(n) < 0.05] = 0.0
    ts = rng.integers(1_700_000_000, 1_800_000_000, n)
    on_the_hour = rng.random(n) < 0.1
    ts[on_the_hour] = ts[on_the_hour] // 3600 * 3600
    mean = np.round(rng.lognormal(3.3, 1.0, n), 4)
    mean_list = [None if r < 0.1 else (0.0 if r < 0.15 else float(m)) for r, m in zip(rng.random(n), mean,
                                                                                      strict=True)]
    last = [None if r < 0.1 else int(t - g) for r, t, g in zip(rng.random(n), ts, rng.integers(0, 10**6, n),
                                                                strict=True)]
    countries = np.array(["FR", "DE", "GB", "US", "", None], dtype=object)
    home = countries[rng.choice(6, n, p=[0.4, 0.2, 0.2, 0.1, 0.02, 0.08])]
    country = countries[rng.choice(6, n, p=[0.3, 0.3, 0.2, 0.1, 0.02, 0.08])]
    return {"amount": amount.tolist(), "transaction_ts": ts.tolist(), "amount_mean_7d": mean_list,
            "last_txn_epoch": last, "home_country": home.tolist(), "country": country.tolist()}


@settings(max_examples=200, deadline=None)
@given(
    amount=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    ts=st.integers(min_value=-(10**10), max_value=10**10),
    mean=st.one_of(st.none(), st.just(0.0), st.floats(min_value=-1e6, max_value=1e9, allow_nan=False,
                                                      allow_infinity=False)),
    gap=st.one_of(st.none(), st.integers(min_value=-(10**6), max_value=10**9)),
    home=st.one_of(st.none(), st.sampled_from(["", "FR", "DE"])),
    country=st.one_of(st.none(), st.sampled_from(["", "FR", "DE"])),
)
def test_any_row_equals_the_definition(amount, ts, mean, gap, home, country):
    inputs = {"amount": [amount], "transaction_ts": [ts], "amount_mean_7d": [mean],
              "last_txn_epoch": [None if gap is None else ts - gap], "home_country": [home], "country": [country]}
    rows = context_rows(inputs)
    assert_matches_reference(rows, inputs)
    assert frame_to_lists(context_frame(arrow_frame(inputs))) == rows


def test_missing_input_column_is_named():
    with pytest.raises(KeyError, match="last_txn_epoch"):
        context_frame(pd.DataFrame({k: [1] for k in INPUTS if k != "last_txn_epoch"}))


def test_registered_view_gives_the_same_values_through_both_feast_entry_points(store):
    """The applied view runs this module: transform_arrow (historical and online retrieval) and transform_dict
    (the serving reader) agree exactly, and equal the definition."""
    odfv = store.get_on_demand_feature_view("transaction_context")
    assert odfv.mode == "pandas"
    assert odfv.tags["implementation"].startswith("mlplatform.features.on_demand@")
    inputs = edge_inputs()
    # Feast hands sources under both their short and full names
    full = {**inputs, **{f"customer_activity__{k}": inputs[k] for k in ("amount_mean_7d", "last_txn_epoch")},
            "customer_profile__home_country": inputs["home_country"], "merchant_profile__country": inputs["country"]}
    as_dict = odfv.transform_dict(dict(full))
    as_arrow = odfv.transform_arrow(pa.table(arrow_frame(inputs)), False).to_pydict()
    assert_matches_reference(as_dict, inputs)
    for name in OUTPUTS:
        assert as_arrow[name] == as_dict[name], name
