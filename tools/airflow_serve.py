"""``make airflow``: the Airflow UI and REST API for this repository's meshing DAGs, on loopback.

``python -m tools.airflow_serve [--home DIR] [--port N] [--configs DIR]`` runs what
``airflow standalone`` runs (API server + UI, scheduler, dag-processor, triggerer; SQLite,
LocalExecutor, SimpleAuthManager) in the environment of ``tools.airflow_env``, waits until the
API answers, prints the address, the login and what to click, and stays in the foreground;
Ctrl-C stops every Airflow process. Airflow's own output goes to ``<home>/airflow-serve.log``.

Tests and the bench use :func:`standalone`, a context manager yielding a :class:`Server` with a
REST API helper (``server.api("GET", "/api/v2/dags")``) that logs in as the admin user.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tools.airflow_env import (
    ADMIN_USER,
    CONFIGS,
    DEFAULT_HOME,
    DEFAULT_PORT,
    AirflowSetupError,
    airflow_env,
    airflow_executable,
    migrate_db,
)

log = logging.getLogger(__name__)

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
LOG_NAME = "airflow-serve.log"
COMPONENTS = (
    ("api-server",),
    ("scheduler", "--skip-serve-logs"),
    ("dag-processor",),
    ("triggerer", "--skip-serve-logs"),
)
PORT_ENV = "AIRFLOW_PORT"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# What `airflow standalone` would force, made explicit. Tasks run as local processes: a few at a
# time keeps a small machine responsive (each imports Airflow and meshing_core, and a batch may
# start worker processes itself). The DAG file never changes when a configs entry or a
# graph.yaml does, so the dag-processor only notices such edits when it re-parses the file:
# every 10 s here instead of Airflow's 30 s.
SERVER_TUNING = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    "AIRFLOW__CORE__PARALLELISM": str(max(4, 2 * (os.cpu_count() or 2))),
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
}


class ServeError(Exception):
    """The server could not start or answer; the message is one line naming the fix."""


class PortBusyError(ServeError):
    """The requested port is already taken on 127.0.0.1."""


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", int(port)))
        except OSError:
            return False
    return True


@dataclass
class Server:
    """A running local Airflow: its address, environment and a REST API helper."""

    home: Path
    port: int
    env: dict[str, str]
    log_path: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _token: str | None = field(default=None, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def user(self) -> str:
        return ADMIN_USER

    def password(self) -> str:
        """The admin password SimpleAuthManager generated into AIRFLOW_HOME on first start."""
        path = self.home / PASSWORDS_FILE
        try:
            return str(json.loads(path.read_text())[ADMIN_USER])
        except (OSError, ValueError, KeyError) as exc:
            raise ServeError(
                f"no admin password in {path} ({type(exc).__name__}): start the server first"
            ) from exc

    def token(self, *, refresh: bool = False) -> str:
        """A JWT for the REST API: POST /auth/token with the admin user and password."""
        if self._token is None or refresh:
            response = self._session.post(
                f"{self.url}/auth/token",
                json={"username": self.user, "password": self.password()},
                timeout=30,
            )
            if response.status_code not in (200, 201):
                raise ServeError(
                    f"login at {self.url}/auth/token refused ({response.status_code}): "
                    f"{response.text[:200]}"
                )
            self._token = str(response.json()["access_token"])
        return self._token

    def api(
        self, method: str, path: str, json: Any = None, *, params: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """One authenticated REST call (``path`` like ``/api/v2/dags``); the response as is."""
        response = self._request(method, path, json, params)
        if response.status_code == 401:  # token expired: log in again once
            self.token(refresh=True)
            response = self._request(method, path, json, params)
        return response

    def _request(
        self, method: str, path: str, body: Any, params: Mapping[str, Any] | None
    ) -> requests.Response:
        return self._session.request(
            method,
            self.url + path,
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
        )

    def get(self, path: str, **params: Any) -> Any:
        """GET a REST path and return its JSON; a non-2xx answer raises naming the path."""
        response = self.api("GET", path, params=params or None)
        if not response.ok:
            raise ServeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0
    ) -> Any:
        """Poll ``probe`` until it returns something truthy; bounded by ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        for _ in range(int(timeout / max(interval, 0.05)) + 2):
            self.check_alive()
            last = probe()
            if last:
                return last
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise ServeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")

    def dags(self) -> list[dict[str, Any]]:
        """Every DAG the server knows, as the REST API lists them."""
        return list(self.get("/api/v2/dags", limit=100).get("dags", []))

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The DAG's REST record once the dag-processor has parsed and stored it."""

        def probe() -> dict[str, Any] | None:
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            return response.json() if response.ok else None

        return self.wait_for(f"DAG {dag_id} to be parsed", probe, timeout)

    def wait_for_run(
        self, dag_id: str, run_id: str, states: tuple[str, ...] = ("success", "failed"),
        timeout: float = 300.0,
    ) -> dict[str, Any]:  # fmt: skip
        """The DAG run's REST record once its state is one of ``states``."""

        def probe() -> dict[str, Any] | None:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            return run if run.get("state") in states else None

        return self.wait_for(f"run {run_id} of {dag_id} to reach {states}", probe, timeout, 2.0)

    def check_alive(self) -> None:
        """Raise naming the log file when an Airflow component has exited."""
        for process in self.processes:
            if process.poll() is not None:
                raise ServeError(
                    f"airflow {' '.join(str(a) for a in process.args[1:])} exited with code "  # type: ignore[index]
                    f"{process.returncode}: see {self.log_path}\n{log_tail(self.log_path)}"
                )


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_groups(processes: list[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every component's process group, wait (bounded) until all are gone, then SIGKILL."""
    groups = [p.pid for p in processes]  # start_new_session: each group id is its leader's pid
    # task runners (and their meshing workers) may sit in process groups of their own: note
    # every descendant now, and kill whatever of them outlives the components
    descendants = _descendants(groups)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(groups)
    while alive and time.monotonic() < deadline:
        for process in processes:
            process.poll()  # reap leaders so their groups can empty
        alive = [pgid for pgid in alive if _group_alive(pgid)]
        if alive:
            time.sleep(0.2)
    for pgid in alive:
        log.warning(
            "Airflow process group %d still running after %.0f s: killing it", pgid, timeout
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    import psutil

    for child in descendants:
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                log.warning("Airflow task process %d outlived its server: killing it", child.pid)
                child.kill()


def _descendants(pids: list[int]) -> list[Any]:
    """Every live descendant process of ``pids`` (psutil handles, safe against pid reuse)."""
    import psutil

    found: list[Any] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.extend(psutil.Process(pid).children(recursive=True))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _api_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def standalone(
    home: Path = DEFAULT_HOME,
    configs: Path = CONFIGS,
    port: int = DEFAULT_PORT,
    *,
    extra_env: Mapping[str, str] | None = None,
    start_timeout: float = START_TIMEOUT_S,
) -> Iterator[Server]:
    """Run a local Airflow on 127.0.0.1:``port`` until the block ends.

    What ``airflow standalone`` runs (migrated DB, API server, scheduler, dag-processor,
    triggerer), started here because standalone always starts the log servers on every
    interface (ports 8793/8794, which also collide between two servers); with LocalExecutor the
    API server reads task logs from the shared log folder instead. Yields once the API server
    answers and the admin password file exists; on exit every component's process group (with
    its running tasks) is stopped. Raises :class:`PortBusyError` when the port is taken.
    """
    if not port_is_free(port):
        raise PortBusyError(
            f"port {port} on 127.0.0.1 is already in use: choose another with --port N "
            f"or {PORT_ENV}=N"
        )
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, configs=Path(configs), port=port)
    env.update(SERVER_TUNING)
    env.update(extra_env or {})
    env["PATH"] = str(Path(airflow_executable()).parent) + os.pathsep + env.get("PATH", "")
    server = Server(home=home, port=port, env=env, log_path=home / LOG_NAME)
    try:
        try:
            migrate_db(server.env, server.log_path, start_timeout)
        except AirflowSetupError as exc:
            raise ServeError(f"{exc}\n" + log_tail(server.log_path)) from exc
        with server.log_path.open("ab") as log_file:
            for command in COMPONENTS:
                server.processes.append(
                    subprocess.Popen(
                        [airflow_executable(), *command],
                        env=env,
                        cwd=home,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # one group per component: stop tasks with it
                    )
                )
        server.wait_for(
            f"the API server at {server.url}",
            lambda: _api_answers(server.url) and (home / PASSWORDS_FILE).exists(),
            start_timeout,
        )
        yield server
    finally:
        # a second Ctrl-C must not cut the clean-up short: signals wait until it is done
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            _stop_groups(server.processes)
            server._session.close()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def expected_dags(configs: Path) -> list[str]:
    """One line per configs entry: the DAG it should give, or why it will be a placeholder."""
    from meshing_core.config import load_config
    from meshing_core.errors import MeshingError

    lines = []
    entries = sorted(p for p in Path(configs).glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    for entry in entries:
        try:
            data = yaml.safe_load(entry.read_text()) or {}
            graph_yaml = (entry.parent / str(data.get("graph", ""))).resolve()
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            lines.append(f"{entry.name}: unreadable ({type(exc).__name__}); placeholder DAG")
            continue
        if not graph_yaml.is_file():
            hint = " (run `make demo` to build it)" if ".demo" in graph_yaml.parts else ""
            lines.append(
                f"{entry.name}: graph {graph_yaml} does not exist yet{hint}; "
                f"mesh_{entry.stem} is a placeholder DAG until then"
            )
            continue
        try:
            name = load_config(graph_yaml).name
        except MeshingError as exc:
            lines.append(f"{entry.name}: {exc}; placeholder DAG")
            continue
        lines.append(f"{entry.name}: mesh_{name} meshes {graph_yaml}")
    return lines or [f"no *.yaml entries in {configs}: no meshing DAGs"]


def _banner(server: Server, configs: Path) -> str:
    expected = expected_dags(configs)
    dags: list[dict[str, Any]] = []
    if any(" mesh_" in line or "placeholder" in line for line in expected):
        try:
            dags = server.wait_for("the first DAGs", server.dags, 60.0, 2.0)
        except ServeError:
            dags = []
    loaded = [
        f"  {d['dag_id']}" + (f"  [BROKEN CONFIG: {d.get('description')}]" if _broken(d) else "")
        for d in dags
    ]
    ids = [d["dag_id"] for d in dags]
    first = "mesh_example" if "mesh_example" in ids or not ids else ids[0]
    return "\n".join(
        [
            "",
            f"Airflow is up: {server.url}",
            f"  login: user {server.user}, password {server.password()}",
            f"  (generated by Airflow into {server.home / PASSWORDS_FILE})",
            f"Configs in {Path(configs).resolve()}:",
            *(f"  {line}" for line in expected),
            "DAGs loaded:" if loaded else "DAGs loaded: none yet (refresh the DAGs page)",
            *loaded,
            "What to click:",
            f"  DAGs -> {first} -> Trigger -> fill the form (timestamp empty = now) -> Trigger,",
            "  then the run's Grid view: start and setup, then layer_2 .. layer_N, each with",
            "  plan, batch (one row entry per mapped batch) and summary, then mesh_metadata and",
            "  the end_run teardown. A failed batch: fix the cause, then Clear it with Downstream.",
            f"Airflow's own output: {server.log_path}",
            "Ctrl-C stops every Airflow process.",
            "",
        ]
    )


def _broken(dag: Mapping[str, Any]) -> bool:
    return any(
        (t.get("name") if isinstance(t, dict) else t) == "broken-config"
        for t in dag.get("tags") or []
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.airflow_serve", description=__doc__)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="AIRFLOW_HOME")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_ENV) or DEFAULT_PORT),
        help=f"API/UI port on 127.0.0.1 (default {PORT_ENV} or {DEFAULT_PORT})",
    )
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="folder of graph entries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not Path(airflow_executable()).exists():
        print(f"error: {airflow_executable()} not found: run `make venv` first", file=sys.stderr)
        return 2

    stop = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting Airflow on 127.0.0.1:{args.port} (home {args.home.resolve()}) ...", flush=True)
    try:
        with standalone(args.home, args.configs, args.port) as server:
            print(_banner(server, args.configs), flush=True)
            while True:
                server.check_alive()
                time.sleep(1.0)
    except PortBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped Airflow", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
