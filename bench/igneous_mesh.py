"""igneous's mesh forge on a precomputed segmentation, timed: the layer-2 bench's baseline.

Run by the igneous venv's python (see ``bench/igneous_env.py``), never by ours: it imports only
igneous, cloud-volume, cloud-files, task-queue and the standard library. It meshes the way igneous
users do (``create_meshing_tasks`` executed by a ``LocalTaskQueue``, unsharded, draco, simplified)
and prints one JSON line: seconds, tasks, fragments, bytes.

It writes into the layer (mesh info, fragments, spatial index, provenance), so it is given a copy.

``python igneous_mesh.py LAYER X Y Z MAX_ERROR PARALLEL MESH_DIR``
"""

from __future__ import annotations

import argparse
import json
import re
import time

from cloudfiles import CloudFiles
from igneous.task_creation import create_meshing_tasks
from taskqueue import LocalTaskQueue

FRAGMENT = re.compile(r"^\d+:0:")  # "<segid>:<lod>:<bbox>"; the rest are info and *.spatial
THROWAWAY = "mesh_igneous"  # the mesh dir is deleted first: only names starting so are accepted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", help="precomputed segmentation cloudpath (file://...)")
    parser.add_argument("shape", type=int, nargs=3, help="task (mesh chunk) shape, voxels xyz")
    parser.add_argument("max_error", type=float, help="max simplification error, nm")
    parser.add_argument("parallel", type=int, help="LocalTaskQueue processes")
    parser.add_argument("mesh_dir", help=f"a throwaway mesh dir ({THROWAWAY}...), deleted first")
    return parser.parse_args(argv)


def checked_mesh_dir(cf: CloudFiles, mesh_dir: str) -> str:
    """A throwaway name that igneous will also read back: its tasks take the mesh info (for the
    spatial index) from the layer's ``info["mesh"]``, whatever ``mesh_dir`` says."""
    if not re.fullmatch(THROWAWAY + r"[A-Za-z0-9_.-]*", mesh_dir):
        raise SystemExit(f"error: mesh dir {mesh_dir!r} is deleted first: name it {THROWAWAY}...")
    named = (cf.get_json("info") or {}).get("mesh", mesh_dir)
    if named != mesh_dir:
        raise SystemExit(
            f"error: the layer's info names mesh dir {named!r}, not {mesh_dir!r}; mesh a copy of "
            "the layer whose info names it (bench/igneous_env.py makes one)"
        )
    return mesh_dir


def remove_mesh_dir(cf: CloudFiles, mesh_dir: str) -> None:
    cf.delete(list(cf.list(prefix=mesh_dir + "/")))


def forge(layer: str, shape: list[int], max_error: float, parallel: int, mesh_dir: str) -> dict:
    """Time task creation + execution (wall clock) and count what was written."""
    cf = CloudFiles(layer)
    remove_mesh_dir(cf, mesh_dir)
    started = time.perf_counter()
    tasks = create_meshing_tasks(
        layer,
        mip=0,
        shape=tuple(shape),
        max_simplification_error=max_error,
        mesh_dir=mesh_dir,
        encoding="draco",
    )
    queue = LocalTaskQueue(parallel=parallel, progress=False)
    count = queue.insert(tasks)  # iterating the tasks writes the layer's provenance
    queue.execute(progress=False)
    seconds = time.perf_counter() - started
    fragments = [p for p in cf.list(prefix=mesh_dir + "/") if FRAGMENT.match(p.split("/")[-1])]
    sizes = cf.size(fragments) if fragments else {}
    return {
        "seconds": seconds,
        "tasks": count,
        "parallel": parallel,
        "fragments": len(fragments),
        "bytes": int(sum(sizes.values())),
    }


def main() -> None:
    args = parse_args()
    cf = CloudFiles(args.layer)
    mesh_dir = checked_mesh_dir(cf, args.mesh_dir)
    stats = forge(args.layer, args.shape, args.max_error, args.parallel, mesh_dir)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":  # the guard matters: parallel > 1 may spawn workers re-importing this
    main()
