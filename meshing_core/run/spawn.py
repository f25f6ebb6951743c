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

    A spawn pool starts one process per submit until it has ``workers`` (a process takes the
    parent's main-module data when it starts), so ``workers`` no-op submits under
    ``_bare_main`` start them all; a worker needs far longer to come up than the loop takes,
    so none is idle in between to be reused.
    """
    pool = ProcessPoolExecutor(
        max_workers=int(workers), mp_context=multiprocessing.get_context("spawn")
    )
    with _bare_main():
        for _ in range(int(workers)):
            pool.submit(int)
    return pool
