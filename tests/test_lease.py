"""The run lease: refusal naming the holder, stale leases, takeover detection, real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from test_store_support import T0, T1, make_dataset

from meshing_core.config import load_config
from meshing_core.errors import MeshingError
from meshing_core.run.lease import Lease, LeaseHolder, acquire, leased, read_lease
from meshing_core.store import files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lease") / "ds"
    make_dataset(folder)
    return folder


@pytest.fixture(params=["file", "mem"])
def config(request, dataset_dir: Path, tmp_path: Path):
    config = load_config(dataset_dir)
    if request.param == "file":
        return replace(config, watershed="file://" + str(tmp_path / "ws"))
    return replace(config, watershed=f"mem://lease-{uuid.uuid4().hex}/ws")


def other_holder(run: float = T0, *, host: str = "other-host", pid: int = 4242, age: float = 0.0):
    now = time.time() - age
    return LeaseHolder(run, host, pid, now, now, uuid.uuid4().hex)


def plant(config, holder: LeaseHolder) -> None:
    """A lease written by someone else."""
    import dataclasses

    files.write_json(config.mesh_cloudpath, "lease.json", dataclasses.asdict(holder))


def test_acquire_writes_holder_and_release_removes_it(config):
    lease = acquire(config, T1, heartbeat=False)
    stored = read_lease(config)
    assert stored is not None
    assert (stored.run, stored.host, stored.pid) == (T1, socket.gethostname(), os.getpid())
    assert stored.token == lease.holder.token
    lease.release()
    assert read_lease(config) is None
    assert not files.exists(config.mesh_cloudpath, "lease.json")


def test_live_holder_is_refused_even_with_break_flag(config):
    plant(config, other_holder(T0))
    for flag in (False, True):
        with pytest.raises(MeshingError) as err:
            acquire(config, T1, flag, heartbeat=False)
        message = str(err.value)
        assert "\n" not in message
        assert "leased by run 2020-09-13T12:26:40Z on other-host pid 4242" in message
        assert "lease.json" in message
    assert read_lease(config).pid == 4242  # untouched


def test_expired_lease_needs_the_break_flag(config):
    plant(config, other_holder(T0, age=3600))
    with pytest.raises(
        MeshingError, match=r"no heartbeat for \d+ s \(> 60 s\): pass --break-lease"
    ):
        acquire(config, T1, ttl_s=60, heartbeat=False)
    lease = acquire(config, T1, break_stale=True, ttl_s=60, heartbeat=False)
    assert read_lease(config).token == lease.holder.token
    lease.release()


def test_ttl_comes_from_the_config(config):
    plant(config, other_holder(T0, age=120))
    acquire_args = {"heartbeat": False}
    with pytest.raises(MeshingError, match="leased by"):
        acquire(config, T1, True, **acquire_args)  # default ttl 15 min: still fresh
    short = replace(config, batches={**config.batches, "lease_ttl_s": 30})
    acquire(short, T1, True, **acquire_args).release()


def test_dead_process_on_this_host_is_taken_over_without_flag(config):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is gone now
    plant(config, other_holder(T0, host=socket.gethostname(), pid=proc.pid))
    lease = acquire(config, T1, heartbeat=False)
    assert read_lease(config).run == T1
    lease.release()


def test_takeover_is_noticed_by_the_old_holder(config):
    lease = acquire(config, T0, heartbeat=False)
    lease.heartbeat()
    lease.check()  # still ours
    plant(config, other_holder(T1))  # e.g. broken by someone with --break-lease
    lease.heartbeat()
    assert lease.lost
    with pytest.raises(MeshingError, match="was taken over by run 2020-09-13T13:26:40Z"):
        lease.check()
    lease.release()
    assert read_lease(config).pid == 4242  # release never deletes someone else's lease


def test_heartbeat_advances_and_context_manager_releases(config):
    with leased(config, T1) as lease:
        first = read_lease(config).heartbeat
        lease.holder = replace(lease.holder, heartbeat=first - 100)
        lease.heartbeat()
        assert read_lease(config).heartbeat >= first
        with pytest.raises(MeshingError, match="leased by"):
            # another process of this host with a live pid: the test runner's parent
            now = time.time()
            parent = LeaseHolder(T0, socket.gethostname(), os.getppid(), now, now, "t")
            acquire(config, parent, heartbeat=False)
    assert read_lease(config) is None


def test_second_run_process_is_refused_until_the_holder_is_killed(dataset_dir: Path):
    config = load_config(dataset_dir)
    holder_code = (
        "import sys, time\n"
        "from meshing_core.config import load_config\n"
        "from meshing_core.run.lease import acquire\n"
        f"lease = acquire(load_config({str(dataset_dir)!r}), {T0!r})\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder_code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(MeshingError) as err:
            acquire(config, T1, heartbeat=False)
        assert f"pid {proc.pid}" in str(err.value)
        assert socket.gethostname() in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lease = acquire(config, T1, heartbeat=False)  # kill -9 left the lease; its pid is dead
    assert read_lease(config).run == T1
    lease.release()


def test_process_free_holder_is_attached_by_token_and_never_pid_dead(config):
    now = time.time()
    holder = LeaseHolder(T1, socket.gethostname(), 0, now, now, "dag-token")
    acquire(config, holder, heartbeat=False)  # e.g. a DAG's first task, which then exits
    with pytest.raises(MeshingError, match="pid 0"):
        acquire(config, T0, heartbeat=False)
    with pytest.raises(MeshingError, match="not by this run"):
        Lease.attach(config, "other-token")
    later = Lease.attach(config, "dag-token")  # e.g. its teardown task
    later.heartbeat()
    assert not later.lost
    later.release()
    assert read_lease(config) is None


def test_two_process_free_holders_on_one_host_exclude_each_other(config):
    now = time.time()
    first = LeaseHolder(T0, socket.gethostname(), 0, now, now, "dag-a")
    acquire(config, first, heartbeat=False)
    with pytest.raises(MeshingError, match="leased by run 2020-09-13T12:26:40Z"):
        acquire(
            config, LeaseHolder(T1, socket.gethostname(), 0, now, now, "dag-b"), heartbeat=False
        )
    acquire(config, first, heartbeat=False)  # the same holder again: re-entrant
    assert read_lease(config).token == "dag-a"
