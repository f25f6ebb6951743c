"""`make demo`'s driver end to end: example built, DAG run through Airflow, report usable."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from meshing_core.demo import MARKER
from tests.cli_support import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_the_example_dag_and_prints_a_working_export_command(tmp_path: Path):
    out, home = tmp_path / "demo", tmp_path / "airflow"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.airflow_demo", "--out", str(out), "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert re.search(r"DAG mesh_example run manual__\S+: success", text), text
    # the per-layer table: every layer done, none failed
    rows = re.findall(
        r"^\s+(\d)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", text, flags=re.MULTILINE
    )  # layer, done, failed, pending, total
    assert all(pending == "0" for *_, pending, _ in rows), text
    layers = {
        int(layer): (int(done), int(failed), int(total)) for layer, done, failed, _, total in rows
    }
    assert sorted(layers) == [2, 3, 4, 5], text
    assert all(done == total and failed == 0 for done, failed, total in layers.values())
    assert f"meshes are in file://{out.resolve()}/" in text
    # the demo used a private configs entry (its --out is not where configs/ points)
    assert (home / "demo-configs" / "example.yaml").exists() and (out / MARKER).exists()

    command = next(line for line in text.splitlines() if "export-mesh" in line)
    argv = shlex.split(command.split(":", 1)[1])[3:]  # drop "python -m meshing_core"
    target = tmp_path / "object.ply"
    argv[argv.index("--out") + 1] = str(target)
    run_cli(*argv)
    header = target.read_bytes()[:200].decode("ascii", "replace")
    assert header.startswith("ply") and "element face" in header
