"""On-demand features: computed at request time from request data and stored features."""

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from views import customer_activity, customer_profile, merchant_profile

from mlplatform.features.on_demand import implementation_digest

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
    mode="pandas",
    description="The transaction in context: its amount against the customer's usual, its hour, "
    "whether the merchant is abroad, and the time since the customer's previous transaction.",
    owner="fraud-features@mlplatform.dev",
    # the code lives in mlplatform.features.on_demand: its digest makes a change there a change of this view
    tags={"implementation": f"mlplatform.features.on_demand@{implementation_digest()}"},
)
def transaction_context(inputs: pd.DataFrame) -> pd.DataFrame:
    """The definitions are in mlplatform.features.on_demand (one implementation for every path): a DataFrame from
    Feast's historical and online retrieval, or a mapping of lists from ``transform_dict`` (the serving reader)."""
    # Stored in the registry as source text and run without this module's globals: import here.
    from mlplatform.features.on_demand import transaction_context as compute

    return compute(inputs)
