"""An Airflow DAG for teams that already run Airflow: the `daily` pipeline, then yesterday's batch scores.

Each task calls the mlplatform CLI (installed on the worker), so Airflow only schedules: the lock, the retries of
transient failures, the resume from a failed step and the run records stay mlplatform's. Copy this file into your
DAGs folder and set MLPLATFORM_HOME (checkout with .venv) and the MLPLATFORM_* settings in the worker environment.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

MLPLATFORM_HOME = os.environ.get("MLPLATFORM_HOME", "/srv/mlplatform")
MLP = f"cd {MLPLATFORM_HOME} && .venv/bin/mlplatform"

with DAG(
    dag_id="mlplatform_daily",
    description="mlplatform: features -> Redis -> monitoring -> retrain/promote, then batch scores.",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # mlplatform's own lock refuses overlaps too
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10), "owner": "ml-platform"},
    tags=["mlplatform"],
) as dag:
    daily = BashOperator(
        task_id="pipeline_daily",
        bash_command=f"{MLP} pipeline run daily",
        env={"MLPLATFORM_ACTOR": "airflow@mlplatform"},
        append_env=True,
    )
    score = BashOperator(
        task_id="score_yesterday",
        bash_command=f"{MLP} score --start {{{{ data_interval_start | ds }}}} --end {{{{ data_interval_end | ds }}}}",
        env={"MLPLATFORM_ACTOR": "airflow@mlplatform"},
        append_env=True,
    )
    daily >> score
