"""The synthetic card-fraud world: generator, raw-data layout, and its documented drift."""
