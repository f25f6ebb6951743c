"""Process pools whose workers start cheaply whatever script started the parent.

A spawned worker re-imports the parent's ``__main__`` script before it runs anything. Under
``airflow dags test`` or an Airflow task that script is ``airflow``, so every worker imported
all of Airflow (about 3.5 s per batch here). The workers only run ``meshing_core`` functions,
which pickle by module name, so the parent's ``__main__`` is hidden while they are started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor


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


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A started pool of ``workers`` spawned processes (no forked SQLite handles or threads).

    A process takes the parent's main-module data when it starts, and a spawn pool starts one
    process per submit (reusing idle ones), so all ``workers`` are launched at once under
    ``_bare_main`` (no-op submits are the fallback where the pool cannot launch them itself).
    """
    pool = ProcessPoolExecutor(
        max_workers=int(workers), mp_context=multiprocessing.get_context("spawn")
    )
    with _bare_main():
        launch = getattr(pool, "_launch_processes", None)  # CPython >= 3.9: all at once
        if callable(launch):
            launch()
        else:
            for _ in range(int(workers)):
                pool.submit(int)
    return pool
