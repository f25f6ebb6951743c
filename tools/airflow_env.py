"""The environment every local Airflow process of this project runs in (demo, UI, tests, bench).

Airflow reads its configuration once per process from ``AIRFLOW__SECTION__KEY`` variables, so
one function builds them all: a private ``AIRFLOW_HOME`` (SQLite metadata DB, logs), this
repository's ``dags/`` and ``plugins/``, no example DAGs, new DAGs unpaused (a triggered run of a
paused DAG would wait forever), the API server and the execution API on one loopback port, and
``MESHING_CONFIGS`` naming the folder of graph entries.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
CONFIGS = REPO / "configs"
DEFAULT_HOME = REPO / ".airflow"
DEFAULT_PORT = 8080
ADMIN_USER = "admin"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers started by tests and the bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(
    home: Path = DEFAULT_HOME,
    *,
    configs: Path = CONFIGS,
    port: int = DEFAULT_PORT,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables for an Airflow process with ``home`` as AIRFLOW_HOME."""
    env = dict(os.environ if base is None else base)
    home = Path(home).resolve()
    url = f"http://127.0.0.1:{port}"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        MESHING_CONFIGS=str(Path(configs).resolve()),
    )
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    return env


def airflow_executable() -> str:
    """The ``airflow`` script of the running interpreter's environment."""
    return str(Path(sys.executable).parent / "airflow")


def airflow_json(args: list[str], env: Mapping[str, str], timeout: float = 300) -> list[dict]:
    """Run ``airflow <args> -o json`` and return the JSON list it printed.

    Airflow may print warnings around the JSON, so the last line that is a JSON list is taken.
    """
    proc = subprocess.run(
        [airflow_executable(), *args, "-o", "json"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("[{") or line.strip() == "[]":
            return json.loads(line)
    raise RuntimeError(
        f"`airflow {' '.join(args)}` printed no JSON list (exit {proc.returncode}): "
        f"{(proc.stderr or proc.stdout)[-300:]!r}"
    )


class AirflowSetupError(RuntimeError):
    """Airflow's own set-up failed; the message is one line naming the log to read."""


def migrate_db(env: Mapping[str, str], log_path: Path, timeout: float = 600) -> None:
    """``airflow db migrate`` for the home in ``env`` (seconds on SQLite; a no-op when current).

    Its output is appended to ``log_path``.
    """
    with Path(log_path).open("a") as log_file:
        try:
            proc = subprocess.run(
                [airflow_executable(), "db", "migrate"],
                env=dict(env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AirflowSetupError(
                f"airflow db migrate took over {timeout:.0f} s: see {log_path}"
            ) from exc
    if proc.returncode != 0:
        raise AirflowSetupError(f"airflow db migrate failed ({proc.returncode}): see {log_path}")
