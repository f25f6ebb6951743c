"""Stand-in for PyChunkedGraph (seung-lab/PyChunkedGraph at c1b7740) backed by an embedded graph file.

Only the read API a mesher needs is here; see ``graph.chunkedgraph``. Tables live under the
directory named by ``PCG_STANDIN_TABLES`` (one folder per graph id); ``tools.pcg_standin`` creates
them and sets up the environment.
"""

__version__ = "standin-c1b7740"
