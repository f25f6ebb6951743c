"""Process pools whose workers start cheaply whatever script started the parent.

Workers come from a ``forkserver``: a fresh single-threaded process (no forked SQLite handles,
threads or Airflow state) that imports the chunk unit's modules once, then forks every worker
of every pool this process starts. A driver running several batches (``airflow dags test``, a
worker taking batch after batch) pays the imports (about a second here) once, not per batch; a
process running one batch pays them once, as a spawned pool did.

A new process re-imports the parent's ``__main__`` script before it runs anything. Under
``airflow dags test`` or an Airflow task that script is ``airflow``, so every worker imported
all of Airflow (about 3.5 s per batch here). The workers only run ``meshing_core`` functions,
which pickle by module name, so the parent's ``__main__`` is hidden while they are started.
Each worker takes the parent's environment as it is when the pool starts (the forkserver's is
the one of its own start), so a pool sees what a spawned one would.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import wait as futures_wait

# what every chunk imports: loaded once, in the forkserver
PRELOAD = (
    "meshing_core.run.chunk",
    "meshing_core.mesh.layer2",
    "meshing_core.mesh.stitch",
    "meshing_core.store.sharding",
)


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Swap ``__main__`` for an empty module (no file, no spec) for the block."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _adopt_environment(environ: dict[str, str]) -> None:
    """Pool initializer: the parent's environment at pool start, not the forkserver's."""
    os.environ.clear()
    os.environ.update(environ)


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


class _Pool(ProcessPoolExecutor):
    """A pool that lets its workers finish starting before it shuts down.

    A worker forked from the forkserver unpickles the pool's queue locks as it starts; a pool
    shut down before that (bad input found while the workers import) removed the locks under
    it, and each such worker printed a FileNotFoundError traceback.
    """

    size = 0

    def _wait_until_started(self, timeout_s: float = 60.0) -> None:
        """Until every worker has answered (a no-op per worker, repeated as needed)."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(seen) < self.size and time.monotonic() < deadline:
            probes = [self.submit(_worker_pid) for _ in range(self.size)]
            done, _ = futures_wait(probes, timeout=max(0.0, deadline - time.monotonic()))
            seen.update(f.result() for f in done if f.exception() is None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait and self.size and not cancel_futures:
            with contextlib.suppress(Exception):  # a broken pool has nothing left to wait for
                self._wait_until_started()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def _worker_pid() -> int:
    time.sleep(0.02)  # long enough that each probe lands on another idle worker
    return os.getpid()


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A started pool of ``workers`` processes forked from the preloaded forkserver.

    A process takes the parent's main-module data when it starts, and a pool starts one
    process per submit (reusing idle ones), so all ``workers`` are launched at once under
    ``_bare_main``; shutting down first waits for every worker to have started (``_Pool``).
    """
    with _bare_main():
        pool = _Pool(
            max_workers=int(workers),
            mp_context=_context(),
            initializer=_adopt_environment,
            initargs=(dict(os.environ),),
        )
        launch = getattr(pool, "_launch_processes", None)  # CPython >= 3.9: all at once
        if callable(launch):
            launch()
        pool.size = int(workers)
    return pool
