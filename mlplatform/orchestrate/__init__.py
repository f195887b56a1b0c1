"""Pipelines: named chains of steps from one YAML file, run under a lock with retries, resume and run records.

Named ``orchestrate`` because ``mlplatform.features.pipelines`` already names the DuckDB feature pipelines.
"""
