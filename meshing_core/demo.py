"""`make demo`: build the example dataset, set it up, mesh layer 2, say where the shards are."""

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
    from meshing_core.run.layer import mesh_layer
    from meshing_core.store.setup import setup_meshes
    from meshing_core.timestamps import format_timestamp, now

    _fresh_dir(out)
    log.info("building the example dataset in %s", out)
    config_path = build_example(out, progress=progress)
    config = load_config(config_path)
    log.info("writing mesh info, sharding specs and custom data")
    setup_meshes(config)
    timestamp = now()
    report = mesh_layer(config, 2, timestamp=timestamp, workers=workers, progress=progress)
    print()
    print(describe(config, timestamp))
    print()
    print(
        f"layer 2 meshed at {format_timestamp(timestamp)}: {report.chunks} chunks "
        f"({report.empty_chunks} empty), {report.fragments} fragments, {report.bytes} bytes "
        f"in {report.seconds:.1f} s"
    )
    print(f"shards are in {report.shard_dir}")
    print(f"inspect with: python -m meshing_core info --graph {config_path}")
