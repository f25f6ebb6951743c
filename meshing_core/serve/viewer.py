"""neuroglancer on the same origin: its compiled client (shipped in the ``neuroglancer`` PyPI
package) and a URL whose state shows the dataset as a graphene layer.

That client is the one neuroglancer's Python server hosts: it must be loaded from
``/v/<token>/`` and it opens an event stream at ``/events/<token>``. With a state in the URL's
fragment it takes the state from there and syncs nothing with the server, so the server holds
that stream open with nothing to send (a closed one is reopened at once); the token here is the
table name. Same origin means the browser needs no CORS to read the graph, the manifest and the
fragments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from meshing_core.errors import MeshingError

VIEWER_PREFIX = "/v"


def viewer_path(table: str) -> str:
    return f"{VIEWER_PREFIX}/{table}"


def client_dir() -> Path:
    """neuroglancer's compiled client; one-line error naming the fix when it is missing."""
    try:
        import neuroglancer
    except ImportError:
        raise MeshingError(
            "neuroglancer is not installed: `pip install neuroglancer` (its PyPI package ships "
            "the viewer this server hosts), or pass --no-viewer"
        ) from None
    folder = Path(neuroglancer.__file__).parent / "static" / "client"
    if not (folder / "index.html").is_file():
        raise MeshingError(
            f"neuroglancer's client is missing from {folder}: reinstall the neuroglancer package"
        )
    return folder


def viewer_state(
    base_url: str,
    table: str,
    resolution: tuple[float, float, float],
    position: tuple[float, float, float],
    extent: float,
    segments: list[int] | None = None,
) -> dict[str, Any]:
    """A neuroglancer state: the graphene layer of ``table`` centred on ``position`` (voxels),
    the 3D view framing ``extent`` voxels."""
    source = f"graphene://{base_url.rstrip('/')}/segmentation/table/{table}"
    layer: dict[str, Any] = {"type": "segmentation", "source": source, "name": table}
    if segments:
        layer["segments"] = [str(s) for s in segments]
    return {
        "dimensions": {axis: [r * 1e-9, "m"] for axis, r in zip("xyz", resolution, strict=True)},
        "position": [float(p) for p in position],
        "crossSectionScale": 0.5,
        "projectionScale": 1.2 * float(extent),
        "layers": [layer],
        "selectedLayer": {"layer": table, "visible": False},
        "layout": "xy-3d",
    }


def viewer_url(base_url: str, table: str, state: dict[str, Any]) -> str:
    """The URL that opens neuroglancer on ``state`` (state in the fragment, as neuroglancer does)."""
    text = json.dumps(state, separators=(",", ":"))
    return f"{base_url.rstrip('/')}{viewer_path(table)}/#!{quote(text, safe='')}"
