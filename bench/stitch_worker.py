"""Stitch one chunk (layer >= 3) in this fresh process and print its memory figures:
``python -m bench.stitch_worker <graph.yaml> <timestamp> <layer> <x> <y> <z>``.

Prints ``<peak MiB> <after-imports MiB> <largest node mesh bytes> <fragments> <seconds>
<codec seconds>``. The largest node mesh is measured as draco would decode it (float32 vertices
+ uint32 faces: 12 bytes each) by watching the meshes stitching hands to the encoder. The codec
seconds are those spent decoding the input fragments and encoding the output meshes (the floor
any stitcher pays). Re-stitching rewrites the same bytes.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import time

    import meshing_core.mesh.fragments as fragments
    import meshing_core.mesh.stitch as stitch
    from bench.rss import current_rss_mib, peak_rss_mib
    from meshing_core.config import load_config
    from meshing_core.run.chunk import ChunkFailure, prepare_context, run_chunk

    config = load_config(argv[0])
    timestamp = float(argv[1])
    layer = int(argv[2])
    coords = tuple(int(c) for c in argv[3:6])
    context = prepare_context(config, layer, timestamp)
    largest = [0]
    codec = [0.0]
    encode = stitch.encode_draco
    decode = fragments.DracoPy.decode

    def watched(vertices, faces, grid, **options):  # type: ignore[no-untyped-def]
        largest[0] = max(largest[0], 12 * len(vertices) + 12 * len(faces))
        started = time.perf_counter()
        try:
            return encode(vertices, faces, grid, **options)
        finally:
            codec[0] += time.perf_counter() - started

    def timed_decode(data):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return decode(data)
        finally:
            codec[0] += time.perf_counter() - started

    stitch.encode_draco = watched
    fragments.DracoPy = type("DracoPyTimed", (), {"decode": staticmethod(timed_decode)})
    before = current_rss_mib()
    started = time.perf_counter()
    result = run_chunk(context, coords)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    if isinstance(result, ChunkFailure):
        raise result.error
    peak = peak_rss_mib()
    print(f"{peak:.2f} {before:.2f} {largest[0]} {result.fragments} {seconds:.4f} {codec[0]:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
