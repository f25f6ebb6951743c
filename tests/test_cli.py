"""The command line as a user runs it: real subprocesses on the example dataset."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_support import run_cli


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=check)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_help_lists_every_command():
    out = run("--help").stdout
    for command in ("example", "setup", "mesh", "build-graph", "info"):
        assert command in out
    for command in ("example", "setup", "mesh", "build-graph", "info"):
        assert "usage:" in run(command, "--help").stdout


@pytest.fixture(scope="module")
def meshed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "gala"
    run("example", "--out", str(out), "-q")
    config = out / "graph.yaml"
    run("setup", "--graph", str(config))
    return config


def test_procedure_flags_mesh_a_subrange(meshed: Path):
    # the seed's flags, --cg_name replaced by --graph; end is exclusive: 2 x 1 x 1 chunks
    proc = run(
        "mesh",
        "--layer",
        "2",
        "--chunk_start",
        "0",
        "0",
        "0",
        "--chunk_end",
        "2",
        "1",
        "1",
        "--mip",
        "0",
        "--skip_cache",
        "--graph",
        str(meshed),
        "--timestamp",
        "2100-01-01T00:00:00Z",
        "-q",
    )
    assert "2 chunks" in proc.stdout
    shards = sorted(
        p.name for p in (meshed.parent / "watershed/graphene_meshes/initial/2").iterdir()
    )
    # chunk position numbers of chunks (0,0,0) and (1,0,0) with 10 spatial bits
    assert set(shards) <= {"0-0.shard", f"{1 << 20}-0.shard"} and shards


def test_whole_layer_then_info(meshed: Path):
    proc = run("mesh", "--graph", str(meshed), "--layer", "2", "--timestamp", "4102444800", "-q")
    assert "112 chunks" in proc.stdout  # 7 x 4 x 4 layer-2 chunks of the 200x100x50 crop
    info = run("info", "--graph", str(meshed)).stdout
    assert "root layer 5" in info
    assert "7x4x4" in info


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--layer", "9"], ["unknown layer 9"]),
        (["--layer", "2", "--timestamp", "yesterday"], ["malformed timestamp", "RFC 3339"]),
        (["--layer", "2", "--chunk-start", "0", "0", "0", "--chunk-end", "9", "1", "1"], ["7"]),
        (["--layer", "2", "--mip", "3"], ["--mip 3"]),
    ],
)
def test_bad_mesh_input_is_one_line(meshed: Path, args: list[str], fragments: list[str]):
    assert_one_line_error(run("mesh", "--graph", str(meshed), *args, check=False), *fragments)


def test_usage_mistakes_are_one_line():
    proc = run("mesh", "--graph", "g.yaml", "--layer", "2", "--chunk_start", "0", "0", check=False)
    assert_one_line_error(proc, "--chunk_start", "expected 3 arguments")


def test_missing_config_is_one_line(tmp_path: Path):
    proc = run("info", "--graph", str(tmp_path / "nowhere" / "graph.yaml"), check=False)
    assert_one_line_error(proc, "not found")
