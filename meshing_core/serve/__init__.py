"""A read-only graphene server: the subset of PyChunkedGraph's HTTP API that viewers use.

neuroglancer's ``graphene://`` source, cloud-volume's graphene path and caveclient talk to a
PyChunkedGraph server. This package answers their read requests from a dataset this project
meshed (the embedded graph or a PyChunkedGraph backend), so the meshes can be looked at with no
CAVE deployment:

- ``served``: the dataset a server answers for (graph per thread, meshing timestamp, shards);
- ``data_files``: the watershed's files and the mesh dir, with HTTP byte ranges;
- ``segmentation_api`` / ``meshing_api``: the graph lookups and the mesh manifest;
- ``viewer``: neuroglancer's compiled client on the same origin, and the URL to open;
- ``app``: the ASGI app (errors as JSON, CORS on request); ``server``: uvicorn.
"""
