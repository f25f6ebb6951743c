"""The demo: build the example dataset, mesh it to its root layer, say where the meshes are.

`make demo` runs it through Airflow (tools/airflow_demo.py); `python -m meshing_core demo` runs
it directly. Both share the building and the report here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".meshing-demo"


def _fresh_dir(out: Path) -> None:
    """Empty ``out`` when a previous demo made it; refuse to touch a folder we did not make."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            from meshing_core.errors import MeshingError

            raise MeshingError(
                f"{out} is not empty and was not made by the demo: pass an empty or new --out folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `python -m meshing_core demo`; rebuilt on every demo run\n")


def build_demo_dataset(out: Path, *, progress: bool = True) -> Path:
    """Build the example into ``out`` (emptied first if a demo made it); return its graph.yaml."""
    from meshing_core.datasets.example import build_example

    _fresh_dir(out)
    log.info("building the example dataset in %s", out)
    return Path(build_example(out, progress=progress))


def report_lines(config_path: Path, timestamp: float) -> list[str]:
    """What a finished demo prints: graph, per-layer status, where the meshes are, what next."""
    from meshing_core.config import load_config
    from meshing_core.info import describe
    from meshing_core.run.status import format_status, status

    config = load_config(config_path)
    return [
        describe(config, timestamp),
        "",
        format_status(status(config, timestamp)),
        "",
        f"meshes are in {config.mesh_cloudpath}/initial/<layer>/",
        f"inspect with: python -m meshing_core status --graph {config_path}",
        "look at one object: python -m meshing_core export-mesh "
        f"--graph {config_path} --point 100 50 25 --out object.ply",
    ]


def run_demo(out: Path, *, workers: int | None = None, progress: bool = True) -> None:
    """The demo without Airflow: build the example and `run` it to its root layer."""
    from meshing_core.config import load_config
    from meshing_core.run.lifecycle import run_graph

    config_path = build_demo_dataset(out, progress=progress)
    summary = run_graph(load_config(config_path), workers=workers, progress=progress)
    if summary.timestamp is None:  # cannot happen in a fresh folder; say so if it does
        raise RuntimeError(f"the demo run planned nothing: {summary.message}")
    print()
    print(summary.describe())
    print()
    print("\n".join(report_lines(config_path, summary.timestamp)))
