"""The same graph meshed through the Airflow DAG (``airflow dags test``) and directly
(``python -m meshing_core run``), both timed as whole processes at one timestamp.

The dataset is the stitch bench's synthetic volume (layer-2 chunks of 64x64x32) scaled up until
a direct run takes a minute or more here, so the DAG's per-batch and per-task costs show against
real work. Batch size and workers are the defaults of both paths. Each run starts from an
absent mesh dir; the direct run's mesh dir is kept aside so the two outputs can be compared
shard by shard (layer output is deterministic, so the shards should be byte-identical).

Airflow set-up (a fresh ``AIRFLOW_HOME`` and ``airflow db migrate``) is not timed: a deployment
has its metadata DB. The run's state and its task instances are read back from that DB after
the run, because ``airflow dags test`` may exit 0 on a failed run.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.dataset import OUT, DatasetSpec, build_dataset
from tools.airflow_env import (
    airflow_env,
    airflow_executable,
    airflow_json,
    free_port,
    migrate_db,
)

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
ROOT = OUT / "dag_vs_direct"
# 16x16x6 layer-2 chunks (layers 2..6): about 160 s direct on 2 noisy cores. It was 16x16x8
# (220 s direct, the whole make bench near its 25 minutes after layer 2 grew its seam checks);
# the direct run must stay above 60 s so Airflow's constant overhead is measured against work.
SPEC = DatasetSpec(shape=(1024, 1024, 192), chunk_size=(64, 64, 32))
TIMEOUT_S = 1800
_LAYER_LINE = re.compile(r"^layer (\d+): (\d+) chunks .* ([0-9.]+) s$")


def _dag_id_for(name: str) -> str:
    """The DAG factory's id for a graph (the plugins folder is on every Airflow path, not ours)."""
    plugins = str(REPO / "plugins")
    if plugins not in sys.path:
        sys.path.append(plugins)
    from meshing_airflow.entries import dag_id_for  # no Airflow import in this module

    return dag_id_for(name)


@dataclass
class Figures:
    spec: DatasetSpec
    build_seconds: float
    timestamp: str
    dag_id: str
    logs: Path
    workers: int = 0
    launcher: str = "airflow"
    direct_seconds: float = 0.0
    direct_layers: dict[int, tuple[int, float]] = field(default_factory=dict)  # chunks, s
    migrate_seconds: float = 0.0
    dag_seconds: float = 0.0
    dag_state: str = ""
    task_states: Counter = field(default_factory=Counter)
    batches: dict[int, int] = field(default_factory=dict)
    batch_seconds: dict[int, float] = field(default_factory=dict)  # summed task durations
    layer_wall: dict[int, float] = field(default_factory=dict)  # first start .. last end
    tasks_seconds: float = 0.0  # summed durations of all task instances
    first_task_after_s: float = 0.0  # process start .. first task start
    after_last_task_s: float = 0.0  # last task end .. process end
    shards: int = 0
    shard_names_equal: bool = False
    shards_differing: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.dag_seconds / max(self.direct_seconds, 1e-9)


def _airflow_argv(as_module: bool) -> list[str]:
    """The timed launcher: the ``airflow`` script (what a user runs), or ``python -m airflow``.

    The two differ in what spawned worker processes re-import as ``__mp_main__``: the script
    path is re-run (importing airflow in every pool worker), a ``-m`` module's ``__main__`` is
    not, so ``--airflow-module`` shows that cost.
    """
    return [sys.executable, "-m", "airflow"] if as_module else [airflow_executable()]


def _run(argv: list[str], env: dict[str, str] | None, log_file: Path) -> tuple[float, str]:
    """Run a whole process; return (wall seconds, combined output). Raises on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )
    seconds = time.perf_counter() - started
    log_file.write_text(proc.stdout)
    if proc.returncode != 0:
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise RuntimeError(
            f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited {proc.returncode} "
            f"(full output in {log_file}): {tail}"
        )
    return seconds, proc.stdout


def _mesh_root(graph_yaml: Path) -> Path:
    from meshing_core.config import load_config
    from meshing_core.store.paths import local_path

    config = load_config(graph_yaml)
    root = local_path(config.mesh_cloudpath)
    if root is None:
        raise RuntimeError(f"{graph_yaml}: the bench needs a file:// mesh dir")
    return root


def _shard_files(root: Path) -> dict[str, Path]:
    initial = root / "initial"
    return {str(p.relative_to(root)): p for p in sorted(initial.rglob("*")) if p.is_file()}


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _read_run(figures: Figures, env: dict[str, str], started_at: float, ended_at: float) -> None:
    """Run state and task instances of the one run in this AIRFLOW_HOME."""
    runs = airflow_json(["dags", "list-runs", figures.dag_id], env)
    if len(runs) != 1:
        raise RuntimeError(f"expected one run of {figures.dag_id}, found {len(runs)}")
    figures.dag_state = str(runs[0].get("state"))
    rows = airflow_json(["tasks", "states-for-dag-run", figures.dag_id, runs[0]["run_id"]], env)
    starts, ends = [], []
    per_layer: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        figures.task_states[str(row.get("state"))] += 1
        start, end = _parse_time(row.get("start_date")), _parse_time(row.get("end_date"))
        if start is None or end is None:
            continue
        starts.append(start)
        ends.append(end)
        figures.tasks_seconds += end - start
        task_id = str(row.get("task_id"))
        found = re.fullmatch(r"layer_(\d+)\.(\w+)", task_id)
        if found:
            layer = int(found.group(1))
            per_layer[layer].append((start, end))
            if found.group(2) == "batch":
                figures.batches[layer] = figures.batches.get(layer, 0) + 1
                figures.batch_seconds[layer] = figures.batch_seconds.get(layer, 0.0) + end - start
    for layer, spans in per_layer.items():
        figures.layer_wall[layer] = max(e for _, e in spans) - min(s for s, _ in spans)
    if starts:
        figures.first_task_after_s = min(starts) - started_at
        figures.after_last_task_s = ended_at - max(ends)


def _compare(figures: Figures, direct_root: Path, dag_root: Path) -> None:
    direct, dag = _shard_files(direct_root), _shard_files(dag_root)
    figures.shards = len(direct)
    figures.shard_names_equal = sorted(direct) == sorted(dag)
    figures.shards_differing = [
        name
        for name in sorted(set(direct) & set(dag))
        if not filecmp.cmp(direct[name], dag[name], shallow=False)
    ]


def run(spec: DatasetSpec = SPEC, root: Path = ROOT, *, airflow_module: bool = False) -> Figures:
    """Build (or reuse) the dataset, then time a direct run and a DAG run at one timestamp."""
    from meshing_core.config import load_config
    from meshing_core.run.cpus import available_cpus
    from meshing_core.timestamps import format_timestamp

    graph_yaml, build_seconds = build_dataset(spec, root)
    graph_yaml = graph_yaml.resolve()
    config = load_config(graph_yaml)
    figures = Figures(
        spec=spec,
        build_seconds=build_seconds,
        timestamp=format_timestamp(float(int(time.time()))),  # after the graph's creation
        dag_id=_dag_id_for(config.name),
        logs=root / "logs",
        workers=available_cpus(),
        launcher="python -m airflow" if airflow_module else "airflow",
    )
    mesh_root = _mesh_root(graph_yaml)
    direct_root = root / "direct_meshes"
    logs = figures.logs
    logs.mkdir(parents=True, exist_ok=True)

    # Airflow set-up, untimed: fresh home and configs folder, migrated DB
    home, configs = root / "airflow", root / "configs"
    for folder in (home, configs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    (configs / f"{config.name}.yaml").write_text(f"graph: {graph_yaml}\n")
    env = airflow_env(home, configs=configs, port=free_port())
    started = time.perf_counter()
    migrate_db(env, logs / "migrate.log", timeout=TIMEOUT_S)
    figures.migrate_seconds = time.perf_counter() - started

    # direct run from an absent mesh dir
    shutil.rmtree(mesh_root, ignore_errors=True)
    shutil.rmtree(direct_root, ignore_errors=True)
    argv = [sys.executable, "-m", "meshing_core", "run", "--graph", str(graph_yaml)]
    argv += ["--timestamp", figures.timestamp, "-q"]
    figures.direct_seconds, out = _run(argv, None, logs / "direct.log")
    for line in out.splitlines():
        found = _LAYER_LINE.match(line.strip())
        if found:
            figures.direct_layers[int(found.group(1))] = (
                int(found.group(2)),
                float(found.group(3)),
            )
    shutil.move(mesh_root, direct_root)
    log.info("direct run: %.1f s", figures.direct_seconds)

    # DAG run from an absent mesh dir, same timestamp
    conf = json.dumps({"timestamp": figures.timestamp})
    started_at = time.time()
    figures.dag_seconds, _ = _run(
        [*_airflow_argv(airflow_module), "dags", "test", figures.dag_id, "--conf", conf],
        env,
        logs / "dag.log",
    )
    _read_run(figures, env, started_at, started_at + figures.dag_seconds)
    log.info("DAG run: %.1f s, state %s", figures.dag_seconds, figures.dag_state)
    _compare(figures, direct_root, mesh_root)
    return figures


def report(f: Figures) -> list[str]:
    layers = sorted(set(f.direct_layers) | set(f.batches))
    lines = [
        f"dag_vs_direct dataset {f.spec.name} chunk {list(f.spec.chunk_size)} "
        f"layers 2..{max(layers) if layers else '?'} build_seconds {f.build_seconds:.2f} "
        f"timestamp {f.timestamp} dag_id {f.dag_id} workers {f.workers} "
        f"launcher '{f.launcher} dags test' migrate_seconds_untimed {f.migrate_seconds:.1f}"
    ]
    for layer in layers:
        chunks, seconds = f.direct_layers.get(layer, (0, float("nan")))
        lines.append(
            f"dag_vs_direct layer {layer} chunks {chunks} direct_seconds {seconds:.1f} "
            f"dag_batches {f.batches.get(layer, 0)} "
            f"dag_batch_task_seconds {f.batch_seconds.get(layer, 0.0):.1f} "
            f"dag_layer_group_wall_seconds {f.layer_wall.get(layer, 0.0):.1f}"
        )
    batch_extra = sum(f.batch_seconds.values()) - sum(s for _, s in f.direct_layers.values())
    states = " ".join(f"{k}={v}" for k, v in sorted(f.task_states.items()))
    lines += [
        f"dag_vs_direct dag_state {f.dag_state} task_instances {sum(f.task_states.values())} "
        f"({states}) task_seconds_sum {f.tasks_seconds:.1f} "
        f"process_start_to_first_task_s {f.first_task_after_s:.1f} "
        f"last_task_to_process_end_s {f.after_last_task_s:.1f}",
        f"dag_vs_direct overhead outside_tasks_s {f.dag_seconds - f.tasks_seconds:.1f} "
        f"non_batch_tasks_s {f.tasks_seconds - sum(f.batch_seconds.values()):.1f} "
        f"batches_minus_direct_layers_s {batch_extra:.1f} "
        f"per_batch_s {batch_extra / max(sum(f.batches.values()), 1):.2f}",
        f"dag_vs_direct shards {f.shards} same_names {f.shard_names_equal} "
        f"byte_identical {f.shard_names_equal and not f.shards_differing} "
        f"differing {len(f.shards_differing)}"
        + (f" (first: {f.shards_differing[0]})" if f.shards_differing else ""),
        f"direct_seconds {f.direct_seconds:.1f}",
        f"dag_seconds {f.dag_seconds:.1f}",
    ]
    found = problems(f)
    lines += [f"dag_vs_direct problem: {p}" for p in found]
    if not found:  # a ratio only means something when both runs did the same work
        lines.append(f"RATIO dag_vs_direct {f.ratio:.3f}")
    return lines


def problems(f: Figures) -> list[str]:
    """Why the comparison is void: a failed DAG run or different shard files."""
    found = []
    if f.dag_state != "success":
        found.append(
            f"the DAG run ended {f.dag_state!r} ({dict(f.task_states)}): see {f.logs / 'dag.log'}"
        )
    if not f.shard_names_equal:
        found.append(f"the DAG and direct runs wrote different shard files ({f.shards} direct)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dag_vs_direct", description=__doc__)
    parser.add_argument(
        "--shape", type=int, nargs=3, default=list(SPEC.shape), help="volume shape (voxels)"
    )
    parser.add_argument(
        "--airflow-module",
        action="store_true",
        help="time `python -m airflow dags test` instead of the airflow script (diagnosis)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    spec = DatasetSpec(shape=tuple(args.shape), chunk_size=SPEC.chunk_size)
    root = ROOT if spec == SPEC else OUT / f"dag_vs_direct-{spec.name}"
    figures = run(spec, root, airflow_module=args.airflow_module)
    for line in report(figures):
        print(line, flush=True)
    if problems(figures):
        sys.exit(1)


if __name__ == "__main__":
    main()
