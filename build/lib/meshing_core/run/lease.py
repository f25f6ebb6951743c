"""The run lease: one active ``run`` (or DAG run) per mesh dir.

``<mesh dir>/lease.json`` names its holder (run timestamp, host, pid, start, heartbeat) and a
random token. A holder refreshes the heartbeat (a background thread does it while the lease is
held); a second ``acquire`` is refused with one line naming the holder.

Stale leases and ``--break-lease`` (``break_stale=True``):

- same host and the holder's pid is gone (or reused by a younger process): the holder is
  certainly dead (e.g. ``kill -9``), so the lease is taken over without any flag;
- no heartbeat for ``ttl_s`` seconds (a holder on another host, or a hung one): stale but not
  certainly dead, so it is taken over only with ``break_stale=True`` (the CLI's
  ``--break-lease``), and the error says so;
- a live, fresh lease is never broken, with or without the flag: stop its run first.

Object stores have no compare-and-swap through cloud-files: after writing, the lease is read
back and the token compared, so two racing starters cannot both proceed unnoticed except in a
window of one round trip. On ``file://`` a fresh lease is created exclusively (link/no-replace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

from meshing_core.config import DEFAULT_BATCHES, GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.store import files
from meshing_core.store.paths import local_path
from meshing_core.timestamps import format_timestamp

log = logging.getLogger(__name__)

LEASE = "lease.json"
DEFAULT_TTL_S = float(DEFAULT_BATCHES["lease_ttl_s"])


class LeaseError(MeshingError):
    """The mesh dir is leased by another run (or the lease was lost)."""


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: the run's meshing timestamp, host, pid, start and last heartbeat."""

    run: float
    host: str
    pid: int
    start: float
    heartbeat: float
    token: str = ""
    owner: str = ""  # who holds it when not a process, e.g. "airflow mesh_example/manual__..."

    @classmethod
    def current(cls, run: float) -> LeaseHolder:
        """This process as the holder of the run at meshing timestamp ``run``."""
        now = round(time.time(), 3)
        return cls(float(run), socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)

    def describe(self) -> str:
        who = f"by {self.owner} on {self.host}" if self.owner else f"on {self.host} pid {self.pid}"
        return (
            f"run {format_timestamp(self.run)} {who}, started "
            f"{format_timestamp(self.start)}, last heartbeat {format_timestamp(self.heartbeat)}"
        )


def ttl_from_config(config: GraphConfig) -> float:
    """``batches.lease_ttl_s`` of graph.yaml (load_config folds a top-level one in)."""
    value = (config.batches or {}).get("lease_ttl_s", DEFAULT_TTL_S)
    return float(value)


def _pid_dead(holder: LeaseHolder) -> bool:
    """True only when the holder ran on this host and its process is certainly gone.

    A holder with pid 0 is not tied to a process (a DAG run whose tasks run in many
    processes): only its heartbeat can make it stale.
    """
    if holder.pid <= 0 or holder.host != socket.gethostname():
        return False
    import psutil

    try:
        proc = psutil.Process(holder.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        # a pid reused by a process started after the lease was taken is not the holder
        return proc.create_time() > holder.start + 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def staleness(holder: LeaseHolder, ttl_s: float, now: float | None = None) -> str | None:
    """Why a lease is stale ('dead' or 'expired'), or None when its holder may be alive."""
    if _pid_dead(holder):
        return "dead"
    now = time.time() if now is None else now
    if now - holder.heartbeat > ttl_s:
        return "expired"
    return None


def read_lease(config: GraphConfig) -> LeaseHolder | None:
    """The current holder, or None when the mesh dir is not leased."""
    try:
        stored = files.read_json(config.mesh_cloudpath, LEASE)
    except ValueError:
        log.warning("lease %s/%s is not JSON: treated as absent", config.mesh_cloudpath, LEASE)
        return None
    if not isinstance(stored, dict):
        return None
    try:
        return LeaseHolder(
            run=float(stored["run"]),
            host=str(stored["host"]),
            pid=int(stored["pid"]),
            start=float(stored["start"]),
            heartbeat=float(stored["heartbeat"]),
            token=str(stored.get("token", "")),
            owner=str(stored.get("owner", "")),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("lease %s/%s is malformed: treated as absent", config.mesh_cloudpath, LEASE)
        return None


def _write(config: GraphConfig, holder: LeaseHolder) -> None:
    files.write_json(config.mesh_cloudpath, LEASE, asdict(holder))


def _create_exclusive(config: GraphConfig, holder: LeaseHolder) -> bool:
    """Create the lease only if none exists (file://); False when someone else has one."""
    base = local_path(config.mesh_cloudpath)
    if base is None:
        _write(config, holder)
        return True
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{LEASE}.tmp-{uuid.uuid4().hex}"
    import json

    tmp.write_text(json.dumps(asdict(holder), indent=2, sort_keys=True))
    try:
        os.link(tmp, base / LEASE)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class Lease:
    """A held lease: ``heartbeat()``, ``check()``, ``release()``; a context manager."""

    def __init__(self, config: GraphConfig, holder: LeaseHolder, ttl_s: float):
        self.config = config
        self.holder = holder
        self.ttl_s = ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def heartbeat(self) -> None:
        """Refresh the heartbeat; marks the lease lost if someone else took it over."""
        with self._lock:
            if self.lost:
                return
            stored = read_lease(self.config)
            if stored is None or stored.token != self.holder.token:
                self.lost = True
                log.error("lease of %s was taken over by %s", self.config.mesh_cloudpath, stored)
                return
            self.holder = replace(self.holder, heartbeat=round(time.time(), 3))
            _write(self.config, self.holder)

    def check(self) -> None:
        """Raise if the lease was lost (call between batches before writing more shards)."""
        if self.lost:
            holder = read_lease(self.config)
            raise LeaseError(
                f"the lease of {self.config.mesh_cloudpath} was taken over"
                + (f" by {holder.describe()}" if holder else "")
                + ": this run stops; resume it when that one is done"
            )

    def start_heartbeat(self, every_s: float | None = None) -> None:
        """Refresh the heartbeat in a daemon thread every ``every_s`` (default ttl / 4)."""
        if self._thread is not None:
            return
        period = every_s if every_s is not None else max(self.ttl_s / 4.0, 0.05)

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.heartbeat()
                except Exception:  # noqa: BLE001 - a storage hiccup must not kill the run
                    log.warning("lease heartbeat failed", exc_info=True)

        self._thread = threading.Thread(target=loop, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stop refreshing, keeping the lease (a DAG task hands it on to the next task)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stop = threading.Event()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self.stop_heartbeat()
        with self._lock:
            stored = read_lease(self.config)
            if stored is not None and stored.token == self.holder.token:
                files.delete_file(self.config.mesh_cloudpath, LEASE)
            self.lost = True

    @classmethod
    def attach(cls, config: GraphConfig, token: str, ttl_s: float | None = None) -> Lease:
        """The lease taken earlier (maybe by another process) with ``token``, to renew or release.

        A DAG takes the lease in one task (holder pid 0) and releases it in its teardown.
        """
        stored = read_lease(config)
        if stored is None or stored.token != token:
            raise LeaseError(
                f"the lease of {config.mesh_cloudpath} is "
                + (f"held by {stored.describe()}" if stored else "gone")
                + ", not by this run: it was broken or released; start the run again"
            )
        return cls(config, stored, ttl_from_config(config) if ttl_s is None else float(ttl_s))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(
    config: GraphConfig,
    holder: LeaseHolder | float,
    break_stale: bool = False,
    *,
    ttl_s: float | None = None,
    heartbeat: bool = True,
    break_hint: str = "--break-lease",
) -> Lease:
    """Take the mesh dir's lease for ``holder`` (a ``LeaseHolder`` or a run timestamp).

    A run timestamp means this process (host, pid); pass ``LeaseHolder(..., pid=0, ...)`` for a
    holder spanning processes (renew it with ``Lease.attach(config, token).heartbeat()``).

    Raises ``LeaseError`` naming the holder when the lease is held by a live process, or by a
    stale one without ``break_stale``. The same process re-acquiring takes its lease over.
    With ``heartbeat`` a daemon thread refreshes it until ``release``.
    """
    if not isinstance(holder, LeaseHolder):
        holder = LeaseHolder.current(float(holder))
    if not holder.token:
        holder = replace(holder, token=uuid.uuid4().hex)
    ttl = ttl_from_config(config) if ttl_s is None else float(ttl_s)
    flag = break_hint  # how the caller's user breaks a stale lease (a CLI flag, a form field)
    where = f"{config.mesh_cloudpath}/{LEASE}"
    for _ in range(3):
        current = read_lease(config)
        if current is None:
            if not _create_exclusive(config, holder):
                continue  # someone created it between our read and write: look again
        else:
            mine = current.token == holder.token or (
                holder.pid > 0 and (current.host, current.pid) == (holder.host, holder.pid)
            )
            why = None if mine else staleness(current, ttl)
            if not mine and why is None:
                raise LeaseError(
                    f"mesh dir is leased by {current.describe()} ({where}): wait for that run "
                    "to finish or stop it; a dead holder's lease can be broken with "
                    f"{flag} once its heartbeat is older than {ttl:g} s"
                )
            if why == "expired" and not break_stale:
                raise LeaseError(
                    f"mesh dir is leased by {current.describe()} ({where}), with no heartbeat "
                    f"for {time.time() - current.heartbeat:.0f} s (> {ttl:g} s): pass {flag} "
                    "if that run is dead"
                )
            if why is not None:
                log.warning("breaking the %s lease of %s (%s)", why, where, current.describe())
            _write(config, holder)
        stored = read_lease(config)
        if stored is not None and stored.token == holder.token:
            lease = Lease(config, holder, ttl)
            if heartbeat:
                lease.start_heartbeat()
            log.info("lease %s taken by %s", where, holder.describe())
            return lease
    stored = read_lease(config)
    raise LeaseError(
        f"mesh dir lease {where} changed hands while taking it"
        + (f" (now {stored.describe()})" if stored else "")
        + ": another run is starting; try again"
    )


@contextlib.contextmanager
def leased(
    config: GraphConfig, run: float, *, break_stale: bool = False, ttl_s: float | None = None
):
    """``with leased(config, timestamp):`` hold the lease for the block."""
    lease = acquire(config, run, break_stale, ttl_s=ttl_s)
    try:
        yield lease
    finally:
        lease.release()
