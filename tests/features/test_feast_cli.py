"""Plain Feast users: `feast -c feature_repo apply` and `materialize-incremental` work with `mlplatform env`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlplatform.settings import PROJECT_ROOT
from tests.conftest import make_settings

FEAST = str(Path(sys.executable).with_name("feast"))


def test_feast_cli_apply_and_materialize_incremental(world, redis_db, redis_addr):
    settings = make_settings(world, redis_addr=redis_addr)
    env = {**os.environ, **settings.feast_env()}
    repo = str(PROJECT_ROOT / "feature_repo")
    applied = subprocess.run([FEAST, "-c", repo, "apply"], env=env, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert settings.layout.registry_path.exists()
    listed = subprocess.run([FEAST, "-c", repo, "feature-views", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "customer_activity" in listed.stdout and "merchant_risk" in listed.stdout
    done = subprocess.run([FEAST, "-c", repo, "materialize-incremental", "2026-12-20T00:00:00"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    # Feast starts a first incremental run at now - TTL; the 60-day merchant view reaches back into the data
    from mlplatform.stores import open_feature_store

    store = open_feature_store(settings)
    assert store.get_feature_view("merchant_risk").most_recent_end_time is not None
    merchants = [{"merchant_id": m} for m in range(10_001, 10_041)]
    got = store.get_online_features(features=["merchant_risk:label_count_30d"], entity_rows=merchants).to_dict()
    assert sum(v is not None for v in got["label_count_30d"]) > 0
