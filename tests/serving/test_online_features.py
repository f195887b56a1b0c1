"""The service's direct Redis reader equals Feast's own get_online_features, value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.online_features import OnlineFeatureReader
from tests.serving.conftest import make_txns


def test_reader_equals_feast_get_online_features(online_world, trained_models, online_store, redis_dbs):
    settings, store = online_world, online_store
    service = store.get_feature_service(settings.feature_service)
    reader = OnlineFeatureReader(store, service)
    assert reader.output_names == [f.name for p in service.feature_view_projections for f in p.features]
    frames = [make_txns(settings, 150, seed=21, when=trained_models.scoring_time, unknown=10),
              make_txns(settings, 40, seed=22, when=trained_models.scoring_time - pd.Timedelta(days=9))]
    txns = pd.concat(frames, ignore_index=True)
    rows = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
             "transaction_ts": int(pd.Timestamp(r.event_timestamp).timestamp())} for r in txns.itertuples()]
    client = redis_dbs.client(0)  # the database online_world materialized into
    replies = []
    with client.pipeline(transaction=False) as pipe:
        for key, fields in reader.commands(rows):
            pipe.hmget(key, fields)
        replies = pipe.execute()
    ours = reader.assemble(rows, replies, [r["transaction_ts"] * 10**6 for r in rows], enforce_ttl=False)
    feast = store.get_online_features(features=service, entity_rows=rows).to_dict()
    for name in reader.output_names:
        got = np.array([np.nan if v[name] is None else float(v[name]) for v in ours.values])
        exp = np.array([np.nan if v is None else float(v) for v in feast[name]])
        np.testing.assert_allclose(got, exp, rtol=0, atol=0, equal_nan=True, err_msg=name)
    assert any(ours.missing[i] for i in range(len(rows)))  # the unknown customers
