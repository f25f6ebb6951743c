"""`make view`: serve the example's meshes to neuroglancer, building and meshing it first if needed.

Uses the dataset `make demo` left in ``--out`` (default ``.demo``) when it is meshed; otherwise
runs `python -m meshing_core demo` there (no Airflow), then `python -m meshing_core serve`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def meshed(graph_yaml: Path) -> bool:
    """Whether a finished run recorded its meshing timestamp in the graph's custom data."""
    from meshing_core.config import load_config
    from meshing_core.errors import MeshingError
    from meshing_core.graph import open_graph
    from meshing_core.mesh.export import meshed_at

    if not graph_yaml.exists():
        return False
    try:
        graph = open_graph(load_config(graph_yaml))
    except MeshingError:
        return False
    try:
        return meshed_at(graph.custom_data()) is not None
    finally:
        graph.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / ".demo", help="example dataset folder")
    parser.add_argument("serve_args", nargs="*", help="passed to `serve` (after --)")
    args = parser.parse_args(argv)
    from meshing_core.cli import main as cli

    graph_yaml = args.out.resolve() / "graph.yaml"
    if not meshed(graph_yaml):
        print(f"no meshed example in {args.out}: building and meshing it (about a minute)")
        code = cli(["demo", "--out", str(args.out.resolve())])
        if code:
            return code
    return cli(["serve", "--graph", str(graph_yaml), *args.serve_args])


if __name__ == "__main__":
    sys.exit(main())
