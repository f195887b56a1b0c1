"""Feature views: typed groups of features with a time-to-live, an owner and a description."""

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
        Field(name="last_txn_epoch", dtype=Int64, description="Unix time (s) of the latest transaction."),
    ],
    source=customer_activity_source,
    online=True,
    description="Sliding-window spending behaviour of a card holder, exact at any time.",
    owner=OWNER,
    tags={"team": "fraud", "pipeline": "customer_activity"},
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
