"""Feature pipelines (DuckDB SQL over raw Parquet), definition checks, and materialization into Redis."""
