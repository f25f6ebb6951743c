"""A dataset built by ``build-graph`` turned into a PyChunkedGraph one, served by the stand-in.

The tests and the bench mesh the same dataset through both backends: the embedded graph file
becomes a stand-in "BigTable table" (``tools.pcg_standin``) and the dataset's ``graph.yaml`` is
rewritten to name it with ``graph: {backend: pychunkedgraph, graph_id: ...}``; everything else
(watershed, mesh settings) stays, so the two runs write to their own copies' mesh dirs.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def to_pychunkedgraph(dataset: Path, tables_dir: Path, graph_id: str) -> Path:
    """Make ``dataset`` (a folder with graph.yaml) read its graph through PyChunkedGraph.

    Returns the rewritten graph.yaml. The stand-in table is a copy of the graph file, so the
    dataset's own file is no longer read.
    """
    from meshing_core.config import load_config
    from meshing_core.store.paths import local_path
    from tools.pcg_standin import create_table

    graph_yaml = Path(dataset) / "graph.yaml"
    config = load_config(graph_yaml)
    create_table(
        Path(tables_dir),
        graph_id,
        Path(str(local_path(config.graph_path))),
        watershed=config.watershed,
        chunk_size=config.chunk_size,
        spatial_bits=config.spatial_bits,
    )
    data = yaml.safe_load(graph_yaml.read_text())
    data["graph"] = {"backend": "pychunkedgraph", "graph_id": graph_id}
    data["watershed"] = config.watershed  # absolute: the table records the same path
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return graph_yaml
