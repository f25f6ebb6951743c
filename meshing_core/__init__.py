"""ChunkedGraph meshing: a memory-bounded mesher whose shards cloud-volume and neuroglancer read.

No Airflow import anywhere in this package (the Airflow glue is ``plugins/meshing_airflow``).
Arrows point one way: ``run`` -> ``mesh`` -> ``store`` / ``graph`` / ``ids``; ``store`` is a
leaf. ``cli`` is ``python -m meshing_core`` (and the ``meshing`` console script).
"""
