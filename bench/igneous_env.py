"""igneous (seung-lab) as the layer-2 bench's baseline, in a venv of its own.

igneous needs DracoPy<2 (we use 2.x), so it runs in ``bench/out/igneous-venv``, built from
``bench/igneous-requirements.txt`` with our interpreter and rebuilt only when that file (or the
Python version) changes. ``measure`` runs ``bench/igneous_mesh.py`` there on a throwaway copy
of a segmentation layer: igneous writes into the layer it meshes (mesh info, provenance) and reads
the mesh info back from the layer's ``info["mesh"]``, so meshing ours in place would touch it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "igneous-requirements.txt"
SCRIPT = HERE / "igneous_mesh.py"
VENV = HERE / "out" / "igneous-venv"
LAYER_COPY = HERE / "out" / "igneous-layer"
MESH_DIR = "mesh_igneous_bench"  # the copy's mesh dir (the script accepts mesh_igneous* only)
INSTALL_TIMEOUT_S = 1800.0


def _wanted_stamp() -> str:
    """The requirements' hash, plus the Python version: a venv is tied to its interpreter."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_venv(venv: Path = VENV) -> tuple[Path, float]:
    """Return (the igneous venv's python, install seconds: 0 when the venv was reused)."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    wanted = _wanted_stamp()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python, 0.0
    log.info("installing igneous into %s", venv)
    started = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-r", str(REQUIREMENTS)],
    )
    for command in steps:
        try:
            subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(venv, ignore_errors=True)  # no stamp: the next call retries
            detail = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()
            raise RuntimeError(
                f"installing igneous into {venv} failed ({detail[-1] if detail else exc}); "
                f"check that PyPI is reachable and that {REQUIREMENTS.name} resolves for Python "
                f"{sys.version_info.major}.{sys.version_info.minor} (edit its pins), then rerun"
            ) from None
    stamp.write_text(wanted)
    seconds = time.perf_counter() - started
    log.info("igneous installed in %.1f s", seconds)
    return python, seconds


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # igneous only reads the chunks
    except OSError:
        shutil.copy2(source, target)


def layer_copy(segmentation_cloudpath: str, target: Path = LAYER_COPY) -> str:
    """A copy of a local layer to mesh: its info naming ``MESH_DIR`` and its mip-0 chunks."""
    prefix = "file://"
    path = segmentation_cloudpath.removeprefix(prefix)
    if "://" in path:
        raise ValueError(f"igneous is measured on a local (file://) layer, not {path}")
    source = Path(path)
    info = json.loads((source / "info").read_text())
    shutil.rmtree(target, ignore_errors=True)
    key = info["scales"][0]["key"]
    shutil.copytree(source / key, target / key, copy_function=_link_or_copy)
    info["mesh"] = MESH_DIR
    (target / "info").write_text(json.dumps(info, indent=2))
    return prefix + str(target.resolve())


def _run_script(python: Path, args: list[str], timeout: float) -> dict:
    """One run of the script; its own session, so a timeout kills its worker processes too."""
    # -I: neither PYTHONPATH nor bench/ on sys.path; the script sees only the igneous venv
    command = [str(python), "-I", str(SCRIPT), *args]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(
                f"igneous meshing took over {timeout:g} s; raise the timeout or mesh less"
            ) from None
    if proc.returncode != 0:
        lines = err.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"igneous meshing failed: {lines[-1]}")
    return json.loads(out.strip().splitlines()[-1])


def measure(
    segmentation_cloudpath: str,
    chunk_size: Sequence[int],
    max_error: float,
    parallel: int,
    repeats: int,
    *,
    timeout: float = 600.0,
    keep_mesh: bool = False,
) -> dict:
    """Median wall seconds of igneous meshing a copy of the layer ``repeats`` times, the runs,
    the last run's tasks / fragments / bytes, and the venv's install seconds. The copy (with its
    meshes) is removed afterwards unless ``keep_mesh``: then ``layer`` names it, to inspect."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    python, install_seconds = ensure_venv()
    layer = layer_copy(segmentation_cloudpath)
    args = [layer, *(str(int(c)) for c in chunk_size)]
    args += [repr(float(max_error)), str(int(parallel)), MESH_DIR]
    runs = []
    try:
        for _ in range(repeats):
            runs.append(_run_script(python, args, timeout))
            log.info("igneous (parallel=%d): %.2f s", parallel, runs[-1]["seconds"])
    finally:
        if not keep_mesh:
            shutil.rmtree(LAYER_COPY, ignore_errors=True)
    return {
        **runs[-1],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "runs": [r["seconds"] for r in runs],
        "install_seconds": install_seconds,
        "layer": layer if keep_mesh else None,
    }
