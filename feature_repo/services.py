"""Feature services: exactly what each model consumes. Models fetch features through these, never by list."""

from feast import FeatureService
from on_demand import transaction_context
from views import customer_activity, merchant_risk

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        customer_activity[
            [
                "txn_count_1h",
                "txn_count_24h",
                "txn_count_7d",
                "amount_sum_24h",
                "amount_mean_24h",
                "amount_sum_7d",
                "amount_mean_7d",
                "distinct_merchants_24h",
            ]
        ],
        merchant_risk[["fraud_rate_30d", "label_count_30d"]],
        transaction_context,
    ],
    description="Inputs of the card-fraud model.",
    owner="fraud-ml@mlplatform.dev",
    tags={"model": "fraud"},
)
