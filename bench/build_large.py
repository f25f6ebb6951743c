"""Builder timing on a 1024x1024x256 synthetic volume, in subprocesses (fresh memory counters).

The input segmentation is generated once (block by block) and kept under ``bench/out/``; the
build itself runs every time in its own process, which reports its seconds and peak RSS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dataset import OUT
from bench.rss import peak_rss_mib

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1024, 1024, 256)
RESOLUTION = (8.0, 8.0, 40.0)
CHUNK = (256, 256, 64)


def _input_dir() -> Path:
    return OUT / ("large-input-" + "x".join(str(s) for s in SHAPE))


def ensure_input() -> Path:
    """Generate the segmentation + agglomeration once (in a subprocess to keep memory here low)."""
    root = _input_dir()
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "bench.build_large", "generate", str(root)], cwd=REPO, check=True
    )
    return root


def _generate(root: Path) -> None:
    from meshing_core.datasets.synthetic import write_agglomeration_csv, write_neurite_segmentation
    from meshing_core.store.paths import to_cloudpath

    agglomeration = write_neurite_segmentation(
        to_cloudpath(root / "segmentation"), SHAPE, seed=2, resolution=RESOLUTION
    )
    write_agglomeration_csv(root / "agglomeration.csv", agglomeration)
    (root / "done").write_text("ok\n")


def _build(root: Path, out: Path) -> None:
    from meshing_core.ingest.builder import build_graph
    from meshing_core.store.paths import to_cloudpath

    started = time.perf_counter()
    build_graph(
        to_cloudpath(root / "segmentation"),
        root / "agglomeration.csv",
        out,
        CHUNK,
        max_error=40.0,
        progress=False,
    )
    seconds = time.perf_counter() - started
    rss = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss}))


def measure() -> dict[str, float]:
    root = ensure_input()
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "bench.build_large", "build", str(root), str(Path(tmp) / "g")],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        _generate(Path(sys.argv[2]))
    elif sys.argv[1] == "build":
        _build(Path(sys.argv[2]), Path(sys.argv[3]))
