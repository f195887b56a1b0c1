"""Orchestration: named pipelines of registered steps from one YAML file, run under a lock with retries, resume
and run records. It sits above the parts: it loads their steps, and no part imports it."""
