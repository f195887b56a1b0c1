"""The process's one Spark session for Feast's Spark offline store and Spark compute engine (``offline_store=spark``).

Feast starts Spark itself where it needs it (``SparkSession.builder.getOrCreate()``: historical retrieval, ``apply``
reading a source's schema, materialization); whoever starts it first, the session is configured the same way:

* ``PYSPARK_SUBMIT_ARGS`` (exported with the other Feast variables by ``Settings.feast_env``: ``mlplatform`` and,
  after ``eval "$(mlplatform env)"``, the plain ``feast`` CLI) carries the master (``MLPLATFORM_SPARK_MASTER``) and
  ``SPARK_CONF`` to the JVM Feast launches;
* ``spark_session(settings)`` starts it explicitly (the tests, the benchmarks) and ``prepare_spark(settings)``
  (``open_feature_store``) re-applies the SQL settings to a session already running in the process.

Time is UTC everywhere: Feast's Spark SQL compares event times with naive UTC literals, builds the point-in-time
join's row ids from timestamps cast to strings, and ``toPandas`` returns naive times in the session's time zone;
Spark's timestamps are microseconds, like the feature tables'. Extra Spark settings (S3 credentials, memory, jars)
go where Spark reads them: ``$SPARK_CONF_DIR/spark-defaults.conf``.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mlplatform.errors import InvalidInputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mlplatform.settings import Settings

APP_NAME = "mlplatform"
_LOG4J2 = Path(__file__).resolve().parent / "spark-log4j2.properties"

# SQL settings Feast's Spark offline store relies on (runtime settings: re-applied to a running session)
SQL_CONF = {
    "spark.sql.session.timeZone": "UTC",  # naive UTC literals, timestamps cast to strings, toPandas
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # entity rows in and features out through Arrow
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",  # never a silent row-by-row conversion
}
# ... and the JVM's (fixed once the session is up)
SPARK_CONF = {
    **SQL_CONF,
    # UTC, and Spark's own log lines at error level only (the file beside this module)
    "spark.driver.extraJavaOptions": f"-Duser.timezone=UTC -Dlog4j2.configurationFile={_LOG4J2.as_uri()}",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.ui.enabled": "false",  # no web UI port per process
    "spark.ui.showConsoleProgress": "false",  # no progress bars over a command's own output
    "spark.log.level": "ERROR",  # Spark's warnings would bury a command's own output
}

_lock = threading.Lock()


def is_local_master(master: str) -> bool:
    """True for ``local``, ``local[N]``, ``local[*]`` (Spark inside this process: its workers run here too)."""
    return master == "local" or master.startswith("local[")


def spark_conf(master: str, driver_memory: str = "4g") -> dict[str, str]:
    """``SPARK_CONF`` with the driver's memory, and for a local master few shuffle partitions: Spark's default 200
    costs a local[2] point-in-time join 2-3x its time in task overhead (on a cluster the default, or
    spark-defaults.conf, stands)."""
    conf = {**SPARK_CONF, "spark.driver.memory": driver_memory}
    if not is_local_master(master):
        return conf
    cores = master.removeprefix("local").strip("[]") or "1"  # local, local[N], local[*], local[N,retries]
    if cores == "*":
        n = os.cpu_count() or 2
    else:
        n = int(cores) if cores.isdigit() else 2
    return {**conf, "spark.sql.shuffle.partitions": str(4 * n)}


def submit_args(settings: Settings) -> str:
    """``PYSPARK_SUBMIT_ARGS`` for a JVM started by PySpark: the configured master and ``spark_conf``."""
    parts = ["--master", settings.spark_master, "--name", APP_NAME]
    for key, value in spark_conf(settings.spark_master, settings.spark_driver_memory).items():
        parts += ["--conf", f"{key}={value}"]
    # pyspark splits them with shlex.split: quoted where a value holds a space (the driver's Java options)
    return shlex.join([*parts, "pyspark-shell"])


def spark_environ(settings: Settings) -> dict[str, str]:
    """The environment a Spark session needs (``Settings.feast_env`` exports it): ``PYSPARK_SUBMIT_ARGS``, and for
    a local master ``PYSPARK_PYTHON``, this interpreter (Spark's default is whatever ``python3`` is on PATH, which
    may lack Feast), unless the environment names one. On a cluster the executors' Python is the operator's."""
    env = {"PYSPARK_SUBMIT_ARGS": submit_args(settings)}
    if is_local_master(settings.spark_master):
        env["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON") or sys.executable
        env["SPARK_LOCAL_IP"] = os.environ.get("SPARK_LOCAL_IP") or "127.0.0.1"  # Spark in-process: loopback only
    return env


def prepare_spark(settings: Settings) -> None:
    """Make the next Spark session Feast starts use ``settings``, and fix the SQL settings of one already running.

    Cheap: starts nothing (a command that never reads the offline store never pays for a JVM)."""
    os.environ.update(spark_environ(settings))
    running = _running_session()
    if running is not None:
        _apply_sql_conf(running)


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session, started with the configured master if none runs; ``InvalidInputError`` naming
    what is missing when pyspark or Java is not installed."""
    with _lock:
        prepare_spark(settings)
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise InvalidInputError(
                "MLPLATFORM_OFFLINE_STORE=spark needs pyspark (run `make setup`)"
            ) from exc
        running = _running_session()
        if running is not None:
            return running
        builder = SparkSession.builder.master(settings.spark_master).appName(APP_NAME)
        for key, value in spark_conf(settings.spark_master, settings.spark_driver_memory).items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # no Java, a master that does not answer: PySpark's own error says which
            raise InvalidInputError(
                f"could not start Spark (master {settings.spark_master}; MLPLATFORM_SPARK_MASTER): "
                f"{type(exc).__name__}: {_first_line(exc)}. Spark needs Java 17 (`make setup` installs Debian's "
                "openjdk-17-jre-headless)."
            ) from exc
        _apply_sql_conf(session)
        return session


def stop_spark() -> None:
    """Stop the process's Spark session, if one runs (the next ``spark_session`` starts a new one)."""
    with _lock:
        running = _running_session()
        if running is not None:
            running.stop()


def _running_session() -> SparkSession | None:
    if "pyspark" not in sys.modules:  # nothing imported pyspark: no session can run
        return None
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        default = SparkSession._instantiatedSession  # the session of another thread (Feast's getOrCreate's)
        if default is not None and default._sc._jsc is not None:
            session = default
    return session


def _apply_sql_conf(session: SparkSession) -> None:
    for key, value in SQL_CONF.items():
        session.conf.set(key, value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
