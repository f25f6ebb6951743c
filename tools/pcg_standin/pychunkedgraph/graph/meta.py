"""Graph metadata: the config and data-source records and ``ChunkedGraphMeta``.

Geometry (bounds, resolution, layer count) comes from the watershed's cloud-volume info, read
lazily, as in PyChunkedGraph.
"""

from collections import namedtuple
from datetime import timedelta

import numpy as np

from .chunks.utils import get_chunks_boundary
from .utils.generic import compute_bitmasks, log_n

DataSource = namedtuple(
    "DataSource",
    ("EDGES", "COMPONENTS", "WATERSHED", "DATA_VERSION", "CV_MIP"),
    defaults=(None, None, None, None, 0),
)

GraphConfig = namedtuple(
    "GraphConfig",
    (
        "ID",  # with ID_PREFIX, the graph (table) id
        "ID_PREFIX",
        "CHUNK_SIZE",
        "FANOUT",
        "LAYER_ID_BITS",  # bits of a node id holding its layer
        "SPATIAL_BITS",  # bits per chunk coordinate at layers 1 and 2
        "OVERWRITE",
        "ROOT_LOCK_EXPIRY",
        "ROOT_COUNTERS",
    ),
    defaults=(None, "", None, 2, 8, 10, False, timedelta(minutes=3), 8),
)


class ChunkedGraphMeta:
    # The default ``custom_data`` dict is shared between instances, as in PyChunkedGraph.
    def __init__(self, graph_config: GraphConfig, data_source: DataSource, custom_data={}):  # noqa: B006
        self._graph_config = graph_config
        self._data_source = data_source
        self._custom_data = custom_data
        self._ws_cv = None
        self._layer_count = None
        self._bitmasks = None
        self._layer_bounds_d = None

    @property
    def graph_config(self) -> GraphConfig:
        return self._graph_config

    @property
    def data_source(self) -> DataSource:
        return self._data_source

    @property
    def custom_data(self) -> dict:
        return self._custom_data

    @property
    def ws_cv(self):
        """The watershed as a ``cloudvolume.CloudVolume`` (opened on first use)."""
        if not self._ws_cv:
            from cloudvolume import CloudVolume

            self._ws_cv = CloudVolume(self._data_source.WATERSHED)
        return self._ws_cv

    @property
    def cv(self):
        """Alias of ``ws_cv``."""
        return self.ws_cv

    @property
    def resolution(self):
        return self.ws_cv.resolution

    @property
    def voxel_bounds(self) -> np.ndarray:
        """[[x0, x1], [y0, y1], [z0, z1]] of the watershed at mip 0."""
        return np.array(self.ws_cv.bounds.to_list()).reshape(2, -1).T

    @property
    def voxel_counts(self) -> np.ndarray:
        """Voxels per axis."""
        bounds = self.voxel_bounds
        return bounds[:, 1] - bounds[:, 0]

    def _chunk_counts(self) -> np.ndarray:
        return get_chunks_boundary(
            self.voxel_counts, np.array(self._graph_config.CHUNK_SIZE, dtype=int)
        )

    @property
    def layer_count(self) -> int:
        """ceil(log_fanout(most layer-2 chunks along an axis)) + 2."""
        if not self._layer_count:
            levels = log_n(np.max(self._chunk_counts()), self._graph_config.FANOUT)
            self._layer_count = int(np.ceil(levels)) + 2
        return self._layer_count

    @layer_count.setter
    def layer_count(self, count):
        self._layer_count = count
        self._bitmasks = compute_bitmasks(
            count, s_bits_atomic_layer=self._graph_config.SPATIAL_BITS
        )

    @property
    def bitmasks(self) -> dict[int, int]:
        if not self._bitmasks:
            self._bitmasks = compute_bitmasks(
                self.layer_count, s_bits_atomic_layer=self._graph_config.SPATIAL_BITS
            )
        return self._bitmasks

    @property
    def layer_chunk_bounds(self) -> dict:
        """{layer: chunks per axis} for layers 2 .. layer_count - 1 (the root layer is left out)."""
        if not self._layer_bounds_d:
            base = self._chunk_counts()
            self._layer_bounds_d = {
                layer: np.ceil(base / (2 ** (layer - 2))).astype(int)
                for layer in range(2, self.layer_count)
            }
        return self._layer_bounds_d

    @layer_chunk_bounds.setter
    def layer_chunk_bounds(self, layer_chunk_bounds_d):
        self._layer_bounds_d = layer_chunk_bounds_d

    @property
    def layer_chunk_counts(self) -> list:
        """Chunks per layer from layer 2 up; the root layer counts 1."""
        bounds = self.layer_chunk_bounds
        return [np.prod(bounds[layer]) for layer in range(2, self.layer_count)] + [1]

    @property
    def READ_ONLY(self):
        return self.custom_data.get("READ_ONLY", False)

    @property
    def split_bounding_offset(self):
        return self.custom_data.get("split_bounding_offset", (240, 240, 24))

    @property
    def dataset_info(self) -> dict:
        """The watershed info plus the graph block (the cloud-volume object's own info, updated).

        ``bounding_box`` is the fixed [2048, 2048, 512] PyChunkedGraph serves.
        """
        info = self.ws_cv.info
        info.update(
            {
                "chunks_start_at_voxel_offset": True,
                "data_dir": self.data_source.WATERSHED,
                "graph": {
                    "chunk_size": self.graph_config.CHUNK_SIZE,
                    "bounding_box": [2048, 2048, 512],
                    "n_bits_for_layer_id": self.graph_config.LAYER_ID_BITS,
                    "cv_mip": self.data_source.CV_MIP,
                    "n_layers": self.layer_count,
                    "spatial_bit_masks": self.bitmasks,
                },
            }
        )
        mesh_dir = self.custom_data.get("mesh", {}).get("dir", None)
        if mesh_dir is not None:
            info["mesh"] = mesh_dir
        return info

    def is_out_of_bounds(self, chunk_coordinate):
        return np.any(chunk_coordinate < 0) or np.any(chunk_coordinate > 2 ** self.bitmasks[1])

    def __getnewargs__(self):
        return (self.graph_config, self.data_source)

    def __getstate__(self):
        return {
            "graph_config": self.graph_config,
            "data_source": self.data_source,
            "custom_data": self.custom_data,
        }

    def __setstate__(self, state):
        self.__init__(state["graph_config"], state["data_source"], state.get("custom_data", {}))

    def __str__(self):
        return (
            f"GRAPH_CONFIG\n{self.graph_config}\n\nDATA_SOURCE\n{self.data_source}\n"
            f"\nCUSTOM_DATA\n{self.custom_data}\n"
        )
