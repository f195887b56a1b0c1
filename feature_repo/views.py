"""Feature views: typed groups of features with a time-to-live, an owner and a description.

``customer_activity`` is computed from the transaction stream too (tags ``freshness: stream``, ``online_source:
event logs``): `mlplatform stream run` writes its online row at each event, and the service computes its windows
exactly at each request's time from the customers' event logs (docs/streaming.md, "Feast's view of the stream").
It stays a FeatureView over the batch source; why is written down above its definition.
"""

from datetime import timedelta

from entities import customer, merchant
from feast import FeatureView, Field, StreamFeatureView
from feast.types import Float64, Int64, String
from sources import (
    customer_activity_source,
    customer_profile_source,
    customer_realtime_push,
    merchant_profile_source,
    merchant_risk_source,
)

OWNER = "fraud-features@mlplatform.dev"

# customer_activity is a streaming feature, declared as a FeatureView over its batch source on purpose.
#
# In Feast's own terms it would be a StreamFeatureView with Aggregations (count, sum, mean over 1 h, 24 h, 7 d)
# over a PushSource. Feast 0.67 cannot give those windows exactly at a request's time:
# * feast.aggregation.Aggregation says "Feast-handled aggregations are not yet supported": the aggregations are
#   computed by the Spark / Ray / Trino compute engines, as sawtooth tiles at hop intervals (tiling_hop_size,
#   5 minutes by default; feast/aggregation/tiling/), and the tiles' result is stored;
# * Feast's Redis online read returns the stored values as they are: it does not aggregate at read time, so an
#   event leaving a window between two writes stays counted (up to a hop, or until the next event).
# The offline rows (mlplatform features build: a row at each transaction and at each window exit) are exact at any
# time, training reads them point in time, and the name, schema, entities, ttl and source below are what the
# registry, the models and every test rely on: they do not change.
#
# How it stays fresh online, between materializations:
# * `mlplatform stream run` applies each transaction event to its customer's event log (a Redis sorted set) and
#   then writes this view's online row, in Feast's own Redis layout, as of the customer's newest event E: the
#   offline row at T = E, windows (E - w, E], the transaction included. It replaces a stored row only when that is
#   older (or of the same instant); a newer one (a window exit written by `mlplatform materialize`) is kept, and
#   materialize in turn skips a key holding a newer row (docs/streaming.md names the one race left). So
#   `get_online_features` agrees with the service at E + 1 us.
# * The service (MLPLATFORM_SERVING_STREAM_FEATURES) computes the windows from the event logs at each request's
#   own time t, exactly what the offline store gives at t - 1 us, window exits included: the row Feast stores is
#   exact at E, the logs at any time.
# Contract: mlplatform/contracts/activity_log.py; rows: mlplatform/features/activity_rows.py.
customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="txn_count_1h", dtype=Int64, description="Transactions in the hour up to now."),
        Field(name="txn_count_24h", dtype=Int64, description="Transactions in the 24 hours up to now."),
        Field(name="txn_count_7d", dtype=Int64, description="Transactions in the 7 days up to now."),
        Field(name="amount_sum_24h", dtype=Float64, description="Amount spent in the last 24 hours."),
        Field(name="amount_mean_24h", dtype=Float64, description="Mean amount in the last 24 hours (null if none)."),
        Field(name="amount_sum_7d", dtype=Float64, description="Amount spent in the last 7 days."),
        Field(name="amount_mean_7d", dtype=Float64, description="Mean amount in the last 7 days (null if none)."),
        Field(name="distinct_merchants_24h", dtype=Int64, description="Distinct merchants in the last 24 hours."),
        Field(name="last_txn_epoch", dtype=Int64, description="Unix time (s) of the latest transaction.",
              tags={"time": "unix_seconds"}),  # a point in time: a replay moving the world moves it too
    ],
    source=customer_activity_source,
    online=True,
    description=(
        "Sliding-window spending behaviour of a card holder, exact at any time. Fresh from the transaction stream: "
        "`mlplatform stream run` writes this online row at each event (as of the customer's newest transaction, "
        "never over a newer row), and the service computes the windows at each request's own time from the "
        "customers' event logs. A FeatureView over the batch source, not a StreamFeatureView: Feast's "
        "aggregations are tiled by a compute engine and not exact at read time (docs/streaming.md)."
    ),
    owner=OWNER,
    tags={"team": "fraud", "pipeline": "customer_activity", "freshness": "stream", "online_source": "event logs",
          "online_writer": "mlplatform stream run"},
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=0),
    schema=[Field(name="home_country", dtype=String, description="Country the card was issued in.")],
    source=customer_profile_source,
    online=True,
    description="Static facts about a card holder.",
    owner=OWNER,
    tags={"team": "fraud"},
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=60),
    schema=[
        Field(name="fraud_count_30d", dtype=Int64, description="Fraud labels that arrived in the last 30 days."),
        Field(name="label_count_30d", dtype=Int64, description="Labels that arrived in the last 30 days."),
        Field(name="fraud_rate_30d", dtype=Float64, description="fraud_count_30d / label_count_30d (null if 0)."),
    ],
    source=merchant_risk_source,
    online=True,
    description="Merchant fraud rate from labels already known at the time (label delay respected).",
    owner=OWNER,
    tags={"team": "fraud", "pipeline": "merchant_risk"},
)

merchant_profile = FeatureView(
    name="merchant_profile",
    entities=[merchant],
    ttl=timedelta(days=0),
    schema=[
        Field(name="category", dtype=String, description="Merchant category."),
        Field(name="country", dtype=String, description="Country the merchant trades from."),
    ],
    source=merchant_profile_source,
    online=True,
    description="Static facts about a merchant.",
    owner=OWNER,
    tags={"team": "fraud"},
)

customer_realtime = StreamFeatureView(
    name="customer_realtime",
    source=customer_realtime_push,
    entities=[customer],
    ttl=timedelta(days=1),
    schema=[
        Field(name="last_amount", dtype=Float64, description="Amount of the customer's latest transaction."),
        Field(name="last_merchant_id", dtype=Int64, description="Merchant of the customer's latest transaction."),
    ],
    timestamp_field="event_timestamp",
    online=True,
    description="Fresh signals pushed by the payment stream; the batch source backfills them.",
    owner=OWNER,
    tags={"team": "fraud", "freshness": "stream"},
)
