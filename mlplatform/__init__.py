"""mlplatform: a feature-store-centric ML platform built on Feast."""

__version__ = "0.1.0"
