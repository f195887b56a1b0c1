"""The model registry: versions round-trip, aliases move, broken model files are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.models.registry import ModelRegistry
from tests.conftest import make_settings

NAMES = ["a", "b", "c"]


def _booster(seed: int) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "seed": seed}, xgb.DMatrix(x, label=y, feature_names=NAMES),
                        num_boost_round=5 + seed)
    return booster, x


@pytest.fixture()
def registry(tmp_path, fresh_models) -> ModelRegistry:
    return ModelRegistry(fresh_models(make_settings(tmp_path)))


def _register(registry: ModelRegistry, seed: int, tmp_path, **kw):
    booster, x = _booster(seed)
    frame = pd.DataFrame(x, columns=NAMES).assign(split="train")
    path = tmp_path / f"set{seed}.parquet"
    frame.to_parquet(path)
    mv = registry.register(booster, feature_names=NAMES, feature_types=["Float64"] * 3, feature_service="svc",
                           metrics={"roc_auc": 0.5 + seed / 100}, params={"max_depth": 3, "nested": {"eta": 0.1}},
                           lineage={"fingerprint": f"fp{seed}", "rows": 300}, training_set_path=path, **kw)
    return mv, booster, x, frame


def test_register_roundtrip_and_aliases(registry, tmp_path):
    assert registry.list_versions() == [] and registry.golden() is None
    assert ModelRegistry(make_settings(tmp_path / "nothing")).list_versions() == []
    v1, b1, x, frame = _register(registry, 1, tmp_path)
    v2, b2, _, _ = _register(registry, 2, tmp_path)
    assert (v1.version, v2.version) == (1, 2)
    got = registry.get(1)
    assert got.feature_names == NAMES and got.feature_service == "svc"
    assert got.metrics == {"roc_auc": pytest.approx(0.51)}
    assert got.params == {"max_depth": 3, "nested": {"eta": 0.1}}
    assert got.lineage["fingerprint"] == "fp1"
    # the loaded booster predicts exactly what the one we registered predicts
    dm = xgb.DMatrix(x, feature_names=NAMES)
    np.testing.assert_array_equal(registry.load_booster(1).predict(dm), b1.predict(dm))
    np.testing.assert_array_equal(registry.load_booster(2).predict(dm), b2.predict(dm))
    assert not np.array_equal(b1.predict(dm), b2.predict(dm))
    pd.testing.assert_frame_equal(pd.read_parquet(registry.training_set_path(1)), frame)

    registry.set_alias("golden", 1)
    registry.set_alias("challenger", 2)
    assert registry.golden().version == 1
    assert [m.version for m in registry.with_alias("challenger")] == [2]
    registry.set_alias("golden", 2)  # an alias moves: the old holder loses it
    assert registry.golden().version == 2 and registry.get(1).aliases == []
    assert registry.previous_golden() is None
    # a fresh registry object (another process) sees the same state
    other = ModelRegistry(registry.settings)
    assert [(m.version, m.aliases) for m in other.list_versions()] == [(1, []), (2, ["challenger", "golden"])]


def test_unknown_version_and_bad_signature(registry, tmp_path):
    _register(registry, 1, tmp_path)
    with pytest.raises(DataNotFoundError, match="no version 9"):
        registry.get(9)
    with pytest.raises(DataNotFoundError):
        registry.set_alias("golden", 9)
    booster, _ = _booster(3)
    with pytest.raises(InvalidInputError, match="expects 3 inputs"):
        registry.register(booster, feature_names=["a"], feature_types=["Float64"], feature_service="svc",
                          metrics={}, params={}, lineage={})


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_model_file_is_refused_naming_the_file(registry, tmp_path, damage):
    mv, *_ = _register(registry, 1, tmp_path)
    path = mv.booster_path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        path.unlink()
    with pytest.raises(InvalidInputError) as err:
        registry.load_booster(1)
    assert str(path) in str(err.value)
