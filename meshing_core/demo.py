"""`make demo`: build the example dataset, mesh it to its root layer, say where the meshes are."""

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


def run_demo(out: Path, *, workers: int | None = None, progress: bool = True) -> None:
    from meshing_core.build.example import build_example
    from meshing_core.config import load_config
    from meshing_core.info import describe
    from meshing_core.run.pipeline import run_graph
    from meshing_core.run.status import format_status, status

    _fresh_dir(out)
    log.info("building the example dataset in %s", out)
    config_path = build_example(out, progress=progress)
    config = load_config(config_path)
    summary = run_graph(config, workers=workers, progress=progress)
    if summary.timestamp is None:  # cannot happen in a fresh folder; say so if it does
        raise RuntimeError(f"the demo run planned nothing: {summary.message}")
    print()
    print(describe(config, summary.timestamp))
    print()
    print(summary.describe())
    print()
    print(format_status(status(config, summary.timestamp)))
    print()
    print(f"meshes are in {config.mesh_cloudpath}/initial/<layer>/")
    print(f"inspect with: python -m meshing_core status --graph {config_path}")
    print(
        "look at one object: python -m meshing_core export-mesh "
        f"--graph {config_path} --point 100 50 25 --out object.ply"
    )
