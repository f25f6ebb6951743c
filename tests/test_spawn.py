"""Worker pools do not re-import the parent's main script (e.g. `airflow`) in every worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path
MARKERS = Path(sys.argv[1])
if __name__ != "__main__":  # a spawned worker importing this script as __mp_main__
    (MARKERS / f"imported-{__import__('os').getpid()}").write_text("")
else:
    sys.path.insert(0, sys.argv[2])
    from meshing_core.run.spawn import spawn_pool
    main = sys.modules["__main__"]
    with spawn_pool(6) as pool:
        assert len(pool._processes) == 6
        print(sorted(pool.map(abs, [-3, -1, -2])))
    assert sys.modules["__main__"] is main
"""


def test_spawned_workers_skip_the_parents_main_script(tmp_path: Path):
    script = tmp_path / "heavy_main.py"
    script.write_text(SCRIPT)
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(markers), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("[1, 2, 3]")
    assert list(markers.iterdir()) == []  # no worker imported the script
