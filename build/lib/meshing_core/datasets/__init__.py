"""Datasets to try and test the mesher on: the example (the gala FIB-SEM train crop, or a
synthetic stand-in) and synthetic neurite volumes. They feed ``meshing_core.ingest``; ingest
knows nothing of them."""
