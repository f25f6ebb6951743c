"""Building an embedded ChunkedGraph from a supervoxel segmentation, an agglomeration and edits."""
