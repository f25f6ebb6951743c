"""`make demo`: build the example, mesh it through its Airflow DAG, print what happened.

Steps: build the example dataset into ``--out`` (default ``.demo``); migrate a private Airflow
metadata DB under ``--home`` (default ``.airflow``); run the example's DAG (``mesh_example``)
end to end with ``airflow dags test`` (a real DAG run: every task of every layer, in one
process, with Airflow's own scheduling loop); then print the run's final state, the per-layer
summary, where the meshes are and an ``export-mesh`` command. Airflow's own output goes to a log
file under the home; a failed run prints its path and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from tools.airflow_env import (
    CONFIGS,
    DEFAULT_HOME,
    REPO,
    AirflowSetupError,
    airflow_env,
    airflow_executable,
    airflow_json,
    migrate_db,
)

log = logging.getLogger("demo")

DAG_ID = "mesh_example"


def _configs_for(graph_yaml: Path, home: Path) -> Path:
    """The committed configs/ when the demo builds where its entry points, else a private one."""
    committed = CONFIGS / "example.yaml"
    import yaml

    entry = yaml.safe_load(committed.read_text()) or {}
    if (CONFIGS / str(entry.get("graph", ""))).resolve() == graph_yaml.resolve():
        return CONFIGS
    private = home / "demo-configs"
    private.mkdir(parents=True, exist_ok=True)
    (private / "example.yaml").write_text(f"graph: {graph_yaml.resolve()}\nmode: local\n")
    return private


def _airflow(args: list[str], env: dict[str, str], logfile: Path, timeout: float) -> int:
    """Run an airflow command, appending its output to ``logfile``; return its exit status."""
    with logfile.open("a") as out:
        out.write(f"\n$ airflow {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(
            [airflow_executable(), *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    return proc.returncode


def _last_run(env: dict[str, str]) -> dict[str, str] | None:
    """The newest run of the example DAG as ``airflow dags list-runs`` reports it."""
    try:
        runs = airflow_json(["dags", "list-runs", DAG_ID], env)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("could not read the run's state: %s", exc)
        return None
    return runs[0] if runs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.airflow_demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / ".demo", help="example dataset folder")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="AIRFLOW_HOME to use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from meshing_core.demo import build_demo_dataset, report_lines
    from meshing_core.errors import MeshingError

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    logfile = home / "demo.log"
    logfile.write_text("")
    try:
        graph_yaml = build_demo_dataset(args.out.resolve())
    except MeshingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = airflow_env(home, configs=_configs_for(graph_yaml, home))

    started = time.monotonic()
    log.info("preparing Airflow's metadata DB in %s", home)
    try:
        migrate_db(env, logfile)
    except AirflowSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("running DAG %s through Airflow (airflow dags test; log: %s)", DAG_ID, logfile)
    try:
        code = _airflow(["dags", "test", DAG_ID], env, logfile, timeout=3600)
    except subprocess.TimeoutExpired:
        print(f"error: the DAG run took over an hour: see {logfile}", file=sys.stderr)
        return 1
    run = _last_run(env)
    state = (run or {}).get("state", "unknown")
    seconds = time.monotonic() - started
    print()
    print(f"DAG {DAG_ID} run {(run or {}).get('run_id', '?')}: {state} ({seconds:.0f} s)")
    if code != 0 or state != "success":
        print(f"the run did not succeed (exit {code}): see {logfile}", file=sys.stderr)
        return 1

    from meshing_core.config import load_config
    from meshing_core.run.records import RunJournal

    entry = RunJournal(load_config(graph_yaml)).last()
    print()
    print("\n".join(report_lines(graph_yaml, entry.timestamp)))
    print("see the run in the Airflow UI: make airflow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
