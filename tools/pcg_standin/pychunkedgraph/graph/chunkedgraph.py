"""``ChunkedGraph``: PyChunkedGraph's read API over a stand-in table.

Signatures, return types and semantics follow PyChunkedGraph at c1b7740 (reads as if no cache
service is attached); storage calls are counted (``_counting``).
"""

import datetime
import time
import typing

import numpy as np

from . import attributes, exceptions, types
from ._counting import counted
from .chunks import utils as chunk_utils
from .client import StandinClient
from .meta import ChunkedGraphMeta
from .utils import basetypes, id_helpers
from .utils import generic as misc_utils

# PyChunkedGraph waits this long between retries of get_root / get_roots
RETRY_SLEEP_SECONDS = 0.5


class ChunkedGraph:
    def __init__(
        self,
        *,
        graph_id: str | None = None,
        meta: ChunkedGraphMeta | None = None,
        client_info=None,
    ):
        """Open the stand-in table ``graph_id`` (or the one ``meta`` names, with that meta).

        An unknown graph id raises ``KeyError`` (PyChunkedGraph's missing meta row); creating a
        graph from ``meta`` is not supported.
        """
        if meta:
            graph_id = meta.graph_config.ID_PREFIX + meta.graph_config.ID
            client = StandinClient(graph_id, config=client_info, graph_meta=meta)
            if not client.exists():
                raise NotImplementedError(
                    f"the PyChunkedGraph stand-in cannot create graph {graph_id}: "
                    "make its table with tools.pcg_standin.create_table"
                )
            self._meta = meta
        else:
            client = StandinClient(graph_id, config=client_info)
            self._meta = client.read_graph_meta()
        self._client = client
        self._id_client = client
        self._cache_service = None
        self.mock_edges = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def meta(self) -> ChunkedGraphMeta:
        return self._meta

    @property
    def graph_id(self) -> str:
        return self.meta.graph_config.ID_PREFIX + self.meta.graph_config.ID

    @property
    def version(self) -> str:
        return self.client.read_graph_version()

    @property
    def client(self) -> StandinClient:
        return self._client

    @property
    def id_client(self) -> StandinClient:
        return self._id_client

    @property
    def cache(self):
        return self._cache_service

    @cache.setter
    def cache(self, cache_service):
        if cache_service is not None:
            raise NotImplementedError("the PyChunkedGraph stand-in has no cache service")
        self._cache_service = None

    @property
    def segmentation_resolution(self) -> np.ndarray:
        return np.array(self.meta.ws_cv.scale["resolution"])

    def create(self):
        self._client.create_graph(self._meta, version=None)

    @counted("update_meta")
    def update_meta(self, meta: ChunkedGraphMeta, overwrite: bool):
        """Store ``meta`` as the graph's meta (this object's ``meta`` is left as it is)."""
        self.client.update_graph_meta(meta, overwrite=overwrite)

    # -- reads --------------------------------------------------------------------------------
    @counted("range_read_chunk")
    def range_read_chunk(
        self,
        chunk_id: basetypes.CHUNK_ID,
        properties: typing.Any = None,
        time_stamp: datetime.datetime | None = None,
    ) -> dict:
        """Every row of the chunk (ids chunk_id .. its highest allocated id) with ``properties``."""
        layer = self.get_chunk_layer(chunk_id)
        last_id = self.id_client.get_max_node_id(
            chunk_id=chunk_id, root_chunk=layer == self.meta.layer_count
        )
        if layer == 1:  # supervoxel ids are not allocated by counters: read the whole chunk
            last_id = chunk_id | self.get_segment_id_limit(chunk_id)
        return self.client.read_nodes(
            start_id=self.get_node_id(np.uint64(0), chunk_id=chunk_id),
            end_id=last_id,
            end_id_inclusive=True,
            properties=properties,
            end_time=time_stamp,
            end_time_inclusive=True,
        )

    @counted("get_parents")
    def get_parents(
        self,
        node_ids: typing.Sequence[np.uint64],
        *,
        raw_only=False,
        current: bool = True,
        fail_to_zero: bool = False,
        time_stamp: datetime.datetime | None = None,
    ):
        """Parent of each node at ``time_stamp`` (an array), or with ``current=False`` every
        parent each node had until then, as [(parent, timestamp), ...] newest first.

        A node without a parent raises ``KeyError`` unless ``fail_to_zero``; when no node has
        one, the empty array is returned.
        """
        time_stamp = misc_utils.get_valid_timestamp(time_stamp)
        rows = self.client.read_nodes(
            node_ids=node_ids,
            properties=attributes.Hierarchy.Parent,
            end_time=time_stamp,
            end_time_inclusive=True,
        )
        if not rows:
            return types.empty_1d.copy()
        result = []
        for node_id in node_ids:
            cells = rows.get(node_id)
            if cells is None:
                if not fail_to_zero:
                    raise KeyError
                result.append(0 if current else [(0, datetime.datetime.fromtimestamp(0))])
            elif current:
                result.append(cells[0].value)
            else:
                result.append([(cell.value, cell.timestamp) for cell in cells])
        if current:
            return np.array(result, dtype=basetypes.NODE_ID)
        return result

    @counted("get_parent")
    def get_parent(
        self,
        node_id: np.uint64,
        *,
        raw_only=False,
        latest: bool = True,
        time_stamp: datetime.datetime | None = None,
    ):
        """Parent of one node at ``time_stamp`` (None if it has none), or all [(parent, ts)]."""
        time_stamp = misc_utils.get_valid_timestamp(time_stamp)
        cells = self.client.read_node(
            node_id,
            properties=attributes.Hierarchy.Parent,
            end_time=time_stamp,
            end_time_inclusive=True,
        )
        if not cells:
            return None
        if latest:
            return cells[0].value
        return [(cell.value, cell.timestamp) for cell in cells]

    @counted("get_children")
    def get_children(
        self,
        node_id_or_ids: typing.Iterable[np.uint64] | np.uint64,
        *,
        raw_only=False,
        flatten: bool = False,
    ) -> dict | np.ndarray:
        """Children of one node (an array), or {node: children} for many (keys as passed)."""
        if np.isscalar(node_id_or_ids):
            cells = self.client.read_node(
                node_id=node_id_or_ids, properties=attributes.Hierarchy.Child
            )
            return cells[0].value if cells else types.empty_1d.copy()
        rows = self.client.read_nodes(
            node_ids=node_id_or_ids, properties=attributes.Hierarchy.Child
        )
        children = {
            node_id: rows[node_id][0].value if node_id in rows else types.empty_1d.copy()
            for node_id in node_id_or_ids
        }
        if not flatten:
            return children
        if not children:
            return types.empty_1d.copy()
        return np.concatenate(list(children.values()))

    @counted("get_roots")
    def get_roots(
        self,
        node_ids: typing.Sequence[np.uint64],
        *,
        assert_roots: bool = False,
        time_stamp: datetime.datetime | None = None,
        stop_layer: int | None = None,
        ceil: bool = True,
        fail_to_zero: bool = False,
        n_tries: int = 1,
    ) -> np.ndarray:
        """Ancestor of each node at the root layer, or at ``stop_layer``.

        Nodes at or above ``stop_layer`` (and 0 in an array) are returned as they are. Parents
        may skip layers: with ``ceil`` a node whose chain jumps over ``stop_layer`` gets the
        ancestor above it; without, it gets its highest ancestor at or below ``stop_layer``.
        """
        time_stamp = misc_utils.get_valid_timestamp(time_stamp)
        top = self.meta.layer_count
        stop_layer = stop_layer if stop_layer else top
        assert stop_layer <= top
        climbing = np.ones(len(node_ids), dtype=bool)

        for _ in range(n_tries):
            climbing[self.get_chunk_layers(node_ids) >= stop_layer] = False
            climbing[node_ids == 0] = False  # an id list compares as a whole: nothing masked
            result = np.array(node_ids, dtype=basetypes.NODE_ID)
            for _ in range(int(stop_layer + 1)):
                below = result[climbing]
                unique, inverse = np.unique(below, return_inverse=True)
                parents = self.get_parents(unique, time_stamp=time_stamp, fail_to_zero=fail_to_zero)
                if not parents.size:
                    break
                stepped = parents[inverse]
                stepped_layers = self.get_chunk_layers(stepped)
                still = climbing.copy()
                still[still] = stepped_layers < stop_layer
                if not ceil:  # a parent above stop_layer: keep the node itself
                    overshoot = stepped_layers > stop_layer
                    stepped[overshoot] = below[overshoot]
                result[climbing] = stepped
                climbing = still
                if not climbing.any():
                    return self._checked_roots(result, assert_roots)
            if ceil or np.all(self.get_chunk_layers(result[result != 0]) >= stop_layer):
                return self._checked_roots(result, assert_roots)
            time.sleep(RETRY_SLEEP_SECONDS)
        return self._checked_roots(result, assert_roots)

    def _checked_roots(self, ids: np.ndarray, assert_roots: bool) -> np.ndarray:
        if assert_roots:
            assert not np.any(self.get_chunk_layers(ids) < self.meta.layer_count), (
                "roots not found for some IDs"
            )
        return ids

    @counted("get_root")
    def get_root(
        self,
        node_id: np.uint64,
        *,
        time_stamp: datetime.datetime | None = None,
        get_all_parents: bool = False,
        stop_layer: int | None = None,
        ceil: bool = True,
        n_tries: int = 1,
    ):
        """Root (or ``stop_layer`` ancestor) of one node; with ``get_all_parents`` the chain."""
        time_stamp = misc_utils.get_valid_timestamp(time_stamp)
        stop_layer = stop_layer if stop_layer else self.meta.layer_count
        if self.get_chunk_layer(node_id) == stop_layer:
            if get_all_parents:
                return np.array([node_id], dtype=basetypes.NODE_ID)
            return node_id

        chain = []
        current = node_id
        for _ in range(n_tries):
            current = node_id
            for _ in range(self.get_chunk_layer(node_id), int(stop_layer + 1)):
                parent = self.get_parent(current, time_stamp=time_stamp)
                if parent is None:
                    break
                current = parent
                layer = self.get_chunk_layer(current)
                if layer < stop_layer:
                    chain.append(current)
                    continue
                if layer == stop_layer or ceil:
                    chain.append(current)
                break
            if self.get_chunk_layer(current) >= stop_layer:
                break
            time.sleep(RETRY_SLEEP_SECONDS)

        if self.get_chunk_layer(current) < stop_layer:
            raise exceptions.ChunkedGraphError(
                f"Cannot find root id {node_id}, {stop_layer}, {time_stamp}"
            )
        if get_all_parents:
            return np.array(chain, dtype=basetypes.NODE_ID)
        return chain[-1] if chain else node_id

    @counted("is_latest_roots")
    def is_latest_roots(
        self,
        root_ids: typing.Iterable,
        time_stamp: datetime.datetime | None = None,
    ) -> np.ndarray:
        """Per id: does it exist before ``time_stamp`` without having been superseded by then."""
        time_stamp = misc_utils.get_valid_timestamp(time_stamp)
        rows = self.client.read_nodes(
            node_ids=root_ids,
            properties=[attributes.Hierarchy.Child, attributes.Hierarchy.NewParent],
            end_time=time_stamp,
        )
        if len(rows) == 0:
            return np.zeros(len(root_ids), dtype=bool)
        latest = [
            node_id
            for node_id, cells in rows.items()
            if attributes.Hierarchy.NewParent not in cells
        ]
        return np.isin(root_ids, latest)

    @counted("get_node_timestamps")
    def get_node_timestamps(
        self, node_ids: typing.Sequence[np.uint64], return_numpy=True
    ) -> typing.Iterable:
        """Creation time of each node (the timestamp of its children cell)."""
        rows = self.client.read_nodes(node_ids=node_ids, properties=attributes.Hierarchy.Child)
        if not rows:
            return np.array([], dtype=np.datetime64) if return_numpy else []
        stamps = [rows[node_id][0].timestamp for node_id in node_ids]
        if return_numpy:
            return np.array(stamps, dtype=np.datetime64)
        return stamps

    # -- id helpers ---------------------------------------------------------------------------
    def is_root(self, node_id: basetypes.NODE_ID) -> bool:
        return self.get_chunk_layer(node_id) == self.meta.layer_count

    def get_serialized_info(self):
        return {"graph_id": self.graph_id}

    def get_node_id(
        self,
        segment_id: np.uint64,
        chunk_id: np.uint64 | None = None,
        layer: int | None = None,
        x: int | None = None,
        y: int | None = None,
        z: int | None = None,
    ) -> np.uint64:
        return id_helpers.get_node_id(
            self.meta, segment_id, chunk_id=chunk_id, layer=layer, x=x, y=y, z=z
        )

    def get_segment_id(self, node_id: basetypes.NODE_ID):
        return id_helpers.get_segment_id(self.meta, node_id)

    def get_segment_id_limit(self, node_or_chunk_id: basetypes.NODE_ID):
        return id_helpers.get_segment_id_limit(self.meta, node_or_chunk_id)

    def get_chunk_layer(self, node_or_chunk_id: basetypes.NODE_ID):
        return chunk_utils.get_chunk_layer(self.meta, node_or_chunk_id)

    def get_chunk_layers(self, node_or_chunk_ids: typing.Sequence):
        return chunk_utils.get_chunk_layers(self.meta, node_or_chunk_ids)

    def get_chunk_coordinates(self, node_or_chunk_id: basetypes.NODE_ID):
        return chunk_utils.get_chunk_coordinates(self.meta, node_or_chunk_id)

    def get_chunk_coordinates_multiple(self, node_or_chunk_ids: typing.Sequence):
        ids = np.array(node_or_chunk_ids, dtype=basetypes.NODE_ID)
        layers = self.get_chunk_layers(ids)
        assert np.all(layers == layers[0]), "All IDs must have the same layer."
        return chunk_utils.get_chunk_coordinates_multiple(self.meta, ids)

    def get_chunk_id(
        self,
        node_id: basetypes.NODE_ID = None,
        layer: int | None = None,
        x: int | None = 0,
        y: int | None = 0,
        z: int | None = 0,
    ):
        return chunk_utils.get_chunk_id(self.meta, node_id=node_id, layer=layer, x=x, y=y, z=z)

    def get_chunk_ids_from_node_ids(self, node_ids: typing.Sequence):
        return chunk_utils.get_chunk_ids_from_node_ids(self.meta, node_ids)

    def get_parent_chunk_id(self, node_or_chunk_id: basetypes.NODE_ID, parent_layer: int = None):
        layer = self.get_chunk_layer(node_or_chunk_id)
        parent_layer = parent_layer if parent_layer else layer + 1
        coords = self.get_chunk_coordinates(node_or_chunk_id)
        coords = coords // self.meta.graph_config.FANOUT ** max(parent_layer - layer, 0)
        x, y, z = (int(c) for c in coords)
        return self.get_chunk_id(layer=parent_layer, x=x, y=y, z=z)
