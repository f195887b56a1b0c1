"""Monitoring: train/serve skew (Evidently), online/offline consistency, live model quality, and the check that
turns them into breaches and retraining requests. Reads what training registered and what serving logged."""
