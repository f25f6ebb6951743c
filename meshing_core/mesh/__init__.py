"""Making meshes: layer-2 chunk meshing (``layer2``, ``overlap``, ``watershed``), simplification
with a measured error bound (``simplify``, ``verify_error``), the draco grid (``draco_grid``,
``layer_grids``), stitching of higher layers (``stitch``, ``descendants``, ``fragments``,
``merge``) and whole-object export (``export``, ``export_formats``)."""
