"""The model trainer's journey: point-in-time training sets, splits, XGBoost, evaluation, retraining."""
