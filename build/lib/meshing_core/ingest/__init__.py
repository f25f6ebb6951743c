"""Ingest: building an embedded ChunkedGraph from a supervoxel segmentation, an agglomeration
and edits (the job PyChunkedGraph's ingest does for BigTable)."""
