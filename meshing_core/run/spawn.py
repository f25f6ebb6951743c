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
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

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


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A started pool of ``workers`` processes forked from the preloaded forkserver.

    A process takes the parent's main-module data when it starts, and a pool starts one
    process per submit (reusing idle ones), so all ``workers`` are launched at once under
    ``_bare_main`` (no-op submits are the fallback where the pool cannot launch them itself).
    """
    with _bare_main():
        pool = ProcessPoolExecutor(
            max_workers=int(workers),
            mp_context=_context(),
            initializer=_adopt_environment,
            initargs=(dict(os.environ),),
        )
        launch = getattr(pool, "_launch_processes", None)  # CPython >= 3.9: all at once
        if callable(launch):
            launch()
        else:
            for _ in range(int(workers)):
                pool.submit(int)
    return pool
