"""Offline batch scoring: every transaction of a time window, point-in-time correct, into Parquet."""
