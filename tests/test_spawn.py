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


ENV_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[1])
from meshing_core.run.spawn import spawn_pool
os.environ["MESHING_SPAWN_PROBE"] = "first"
with spawn_pool(2) as pool:  # starts the forkserver with this environment
    first = pool.submit(os.getenv, "MESHING_SPAWN_PROBE").result()
os.environ["MESHING_SPAWN_PROBE"] = "second"
with spawn_pool(2) as pool:  # same forkserver, the parent's environment now
    second = pool.submit(os.getenv, "MESHING_SPAWN_PROBE").result()
print(first, second, "meshing_core.mesh.layer2" in sys.modules)
"""


def test_later_pools_see_the_parents_environment_and_skip_reimports(tmp_path: Path):
    """Pools fork from one preloaded server, yet each takes the environment of its own start."""
    script = tmp_path / "env_main.py"
    script.write_text(ENV_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second, parent_loaded = proc.stdout.split()
    assert (first, second) == ("first", "second")
    assert parent_loaded == "False"  # the chunk unit is imported in the server, not the parent


def test_bad_input_found_while_workers_start_is_one_line_and_the_command_exits(
    example_copy: Path,
):
    """The pool starts before the inputs are checked; an input error then must not leave
    workers dying with tracebacks (or the command hanging) while it shuts down."""
    import shutil

    shutil.rmtree(example_copy / "watershed" / "graphene_meshes", ignore_errors=True)
    for _ in range(3):  # a race: several tries
        proc = subprocess.run(
            [sys.executable, "-m", "meshing_core", "mesh", "--graph",
             str(example_copy / "graph.yaml"), "--layer", "2", "--workers", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: mesh info "), proc.stderr
        assert "setup --graph" in lines[0]
