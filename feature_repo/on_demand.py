"""On-demand features: computed at request time from request data and stored features."""

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from views import customer_activity, customer_profile, merchant_profile

transaction_request = RequestSource(
    name="transaction",
    schema=[
        Field(name="amount", dtype=Float64, description="Amount of the transaction being scored."),
        Field(name="transaction_ts", dtype=Int64, description="Unix time (s) of the transaction being scored."),
    ],
)


@on_demand_feature_view(
    sources=[
        transaction_request,
        customer_activity[["amount_mean_7d", "last_txn_epoch"]],
        customer_profile,
        merchant_profile[["country"]],
    ],
    schema=[
        Field(name="log_amount", dtype=Float64),
        Field(name="amount_vs_mean_7d", dtype=Float64),
        Field(name="hour_of_day", dtype=Int64),
        Field(name="is_night", dtype=Int64),
        Field(name="is_foreign", dtype=Int64),
        Field(name="seconds_since_last_txn", dtype=Int64),
    ],
    mode="python",
    description="The transaction in context: its amount against the customer's usual, its hour, "
    "whether the merchant is abroad, and the time since the customer's previous transaction.",
    owner="fraud-features@mlplatform.dev",
)
def transaction_context(inputs: dict) -> dict:
    import math  # the function is stored in the registry and runs without this module's globals

    out: dict = {k: [] for k in ("log_amount", "amount_vs_mean_7d", "hour_of_day", "is_night", "is_foreign",
                                 "seconds_since_last_txn")}
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
