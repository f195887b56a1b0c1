"""The generative rule of the synthetic fraud world, kept in one place so tests and docs can cite it.

Fraud probability of a transaction (the oracle, never a feature)::

    logit = BASE
          + BURST  * min(number of the customer's transactions in the previous hour, 6)
          + AMOUNT * clip(ln(amount / customer's typical amount), -1, 3)
          + FOREIGN * is_foreign + FOREIGN_NIGHT * (is_foreign and hour(UTC) < 6)
          + MERCHANT * merchant's latent risk
    p = 1 / (1 + exp(-logit))

Every term is a signal the feature pipelines can learn: bursts (``txn_count_1h``), amounts far above the
customer's usual (``amount_vs_mean_7d``), foreign merchants at night (``is_foreign``, ``hour_of_day``) and risky
merchants (``fraud_rate_30d``, from labels already known).

The rule has no calendar: when the world happens is the generator's business (``mlplatform.data.generator``; by
default the drifted period ends at the start of today, so "now" is always just after the data).
"""

from __future__ import annotations

import numpy as np

BASE = -6.2
BURST = 0.9
AMOUNT = 1.3
FOREIGN = 0.7
FOREIGN_NIGHT = 1.8
MERCHANT = 5.0
MAX_BURST = 6
NIGHT_END_HOUR = 6

COUNTRIES = np.array(["US", "GB", "DE", "FR", "CA", "BR", "IN", "NG"])
COUNTRY_WEIGHTS = np.array([0.55, 0.12, 0.09, 0.08, 0.07, 0.04, 0.03, 0.02])

CATEGORIES = np.array(
    ["grocery", "restaurant", "fuel", "travel", "online_services", "electronics", "jewelry", "gambling"]
)
CATEGORY_WEIGHTS = np.array([0.26, 0.22, 0.14, 0.09, 0.12, 0.09, 0.05, 0.03])
CATEGORY_RISK = np.array([0.02, 0.03, 0.05, 0.15, 0.20, 0.28, 0.38, 0.55])

# --- Drift (what `mlplatform data generate --drift` changes in the later period) --------------------------
# DRIFTED:   transaction amounts are scaled by DRIFT_AMOUNT_SCALE (prices rise), so amount_* features shift;
#            the share of purchases at foreign merchants rises to DRIFT_FOREIGN_SHARE (travel season), so
#            is_foreign shifts, and because foreign purchases go to many different merchants rather than the
#            customer's few favourites, distinct_merchants_24h shifts too.
# UNDRIFTED: how often customers transact (txn_count_*), the hour-of-day pattern, merchants' categories, and
#            the fraud rule itself.
DRIFT_AMOUNT_SCALE = 1.8
DRIFT_FOREIGN_SHARE = 0.45
BASE_FOREIGN_SHARE = 0.06

DRIFTED_FEATURES = (
    "amount_sum_24h", "amount_mean_24h", "amount_sum_7d", "amount_mean_7d", "is_foreign", "distinct_merchants_24h",
)
UNDRIFTED_FEATURES = ("txn_count_24h", "txn_count_7d", "hour_of_day")


def fraud_probability(
    n_prev_1h: np.ndarray,
    amount: np.ndarray,
    typical_amount: np.ndarray,
    is_foreign: np.ndarray,
    hour: np.ndarray,
    merchant_risk: np.ndarray,
) -> np.ndarray:
    """True probability that each transaction is fraud under the world's rule."""
    logit = (
        BASE
        + BURST * np.minimum(n_prev_1h, MAX_BURST)
        + AMOUNT * np.clip(np.log(amount / typical_amount), -1.0, 3.0)
        + FOREIGN * is_foreign
        + FOREIGN_NIGHT * (is_foreign & (hour < NIGHT_END_HOUR))
        + MERCHANT * merchant_risk
    )
    return 1.0 / (1.0 + np.exp(-logit))
