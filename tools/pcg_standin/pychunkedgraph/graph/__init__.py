"""The graph package: ``ChunkedGraph`` and ``ChunkedGraphMeta`` as PyChunkedGraph exports them."""

from .chunkedgraph import ChunkedGraph
from .meta import ChunkedGraphMeta

__all__ = ["ChunkedGraph", "ChunkedGraphMeta"]
