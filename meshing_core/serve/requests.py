"""Request parsing the graph and mesh APIs share: tables, node ids, timestamps, bounds, flags.

Every problem becomes an ``ApiError`` (status + one-line message), which the app answers as
JSON ``{"message": ...}``, as PyChunkedGraph does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.graph.nodes import in_id_space
from meshing_core.serve.served import ServedGraph
from meshing_core.timestamps import parse_timestamp

_BOUNDS = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)$")
TRUE = {"1", "true", "yes", "on", "t", "y"}


class ApiError(MeshingError):
    """An answer other than 200: its status and the message the client sees."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_table(served: ServedGraph, table: str) -> None:
    if table != served.table:
        raise ApiError(
            404, f"unknown table {table!r}: this server serves table {served.table!r} only"
        )


def flag(value: str | None, default: bool = False) -> bool:
    """A boolean query parameter as PyChunkedGraph reads them ("1", "true", ...)."""
    return default if value is None else value.strip().lower() in TRUE


def timestamp_of(served: ServedGraph, value: str | None) -> float:
    """The ``timestamp`` query (Unix seconds or RFC 3339), else the meshing timestamp."""
    if value is None or value == "":
        return served.timestamp
    try:
        return parse_timestamp(value)
    except MeshingError as exc:
        raise ApiError(400, str(exc)) from None


def node_id(served: ServedGraph, text: str | int, what: str = "node id") -> int:
    """One id of this table's id space (layer and chunk in range); 400/404 otherwise."""
    if isinstance(text, float | bool):  # a JSON number past 2**53 has already lost its bits
        raise ApiError(400, f"bad {what} {text!r}: send ids as JSON integers or strings")
    try:
        node = int(text)
    except (TypeError, ValueError):
        raise ApiError(400, f"bad {what} {text!r}: ids are unsigned 64-bit integers") from None
    if node < 0 or node >= 2**64:
        raise ApiError(400, f"bad {what} {text!r}: ids are unsigned 64-bit integers")
    if node != 0 and not in_id_space(served.meta, node):
        raise ApiError(
            404,
            f"{what} {node} is not a node of table {served.table!r} (layer "
            f"{ids.layer_of(node)}, this graph has layers 1..{served.meta.n_layers})",
        )
    return node


def node_ids(served: ServedGraph, values: Iterable[Any], what: str = "node id") -> np.ndarray:
    """Ids from a JSON list, each checked as ``node_id`` does."""
    return np.array([node_id(served, v, what) for v in values], dtype=np.uint64)


def layers_known(served: ServedGraph, nodes: np.ndarray) -> None:
    """A batch of ids (roots_binary: up to 250,000) checked at once: layers the graph has."""
    layers = ids.layers_of(nodes)
    bad = np.flatnonzero((nodes != 0) & ((layers < 1) | (layers > served.meta.n_layers)))
    if bad.size:
        node = int(nodes[bad[0]])
        raise ApiError(
            404,
            f"node id {node} is not a node of table {served.table!r} (layer "
            f"{ids.layer_of(node)}, this graph has layers 1..{served.meta.n_layers})",
        )


def stop_layer_of(served: ServedGraph, value: str | int | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        layer = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"bad stop_layer {value!r}: give a layer number") from None
    if not 1 <= layer <= served.meta.n_layers:
        raise ApiError(
            400, f"unknown layer {layer}: this graph has layers 1..{served.meta.n_layers}"
        )
    return layer


def bounds_of(value: str | None) -> tuple[list[int], list[int]] | None:
    """``bounds=x0-x1_y0-y1_z0-z1`` (absolute mip-0 voxels, [start, stop)) as (start, stop)."""
    if value is None or value == "":
        return None
    match = _BOUNDS.match(value.strip())
    if match is None:
        raise ApiError(
            400,
            f"malformed bounds {value!r}: use x0-x1_y0-y1_z0-z1 in voxels (e.g. 0-64_0-64_0-32)",
        )
    numbers = [int(v) for v in match.groups()]
    start, stop = numbers[0::2], numbers[1::2]
    if any(b <= a for a, b in zip(start, stop, strict=True)):
        raise ApiError(400, f"malformed bounds {value!r}: each axis needs start < end")
    return start, stop


def json_ids(values: Iterable[int], as_str: bool) -> list[int] | list[str]:
    """Ids for a JSON answer; as strings when ``int64_as_str`` asked (JavaScript loses bits)."""
    if as_str:
        return [str(int(v)) for v in values]
    return [int(v) for v in values]


def json_id(value: int, as_str: bool) -> int | str:
    return str(int(value)) if as_str else int(value)
