"""Online predictions: a FastAPI service joining Redis features with warm XGBoost models."""
