"""CPU count from affinity and cgroup quotas, on fake cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path

from meshing_core.run.cpus import available_cpus, cgroup_cpu_limit


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc + "\n")
    return root, proc_file


def test_v2_quota_rounds_up_and_caps_affinity(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/", {"cpu.max": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus(root, proc) == min(_affinity(), 2)


def test_v2_limit_on_an_ancestor_cgroup_counts(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/worker",
        {
            "kubepods/pod1/worker/cpu.max": "max 100000",
            "kubepods/pod1/cpu.max": "100000 100000",
            "cpu.max": "max 100000",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


def test_v2_unlimited_uses_affinity(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert available_cpus(root, proc) == _affinity()


def test_v1_cfs_quota(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/pod\n0::/",
        {
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "50000",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert available_cpus(root, proc) == 1  # never 0


def test_v1_unlimited_quota_and_missing_files(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "3:cpu,cpuacct:/",
        {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(root, proc) is None
    empty = tmp_path / "nothing"
    assert cgroup_cpu_limit(empty, empty / "cgroup") is None
    assert available_cpus(empty, empty / "cgroup") == _affinity()


def test_this_machine() -> None:
    assert 1 <= available_cpus() <= _affinity()
