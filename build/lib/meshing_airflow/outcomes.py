"""One mapping from ``meshing_core`` exceptions to Airflow task outcomes.

A ``MeshingError`` is a user error (bad config, bad form, a mesh dir leased by another run, a
superseded run): retrying cannot fix it, so the task fails at once, without retries, with the
error's one line. Anything else (a crashed chunk, a storage hiccup, a killed worker) may pass
on a retry, so it propagates and Airflow retries the task as configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.sdk.exceptions import AirflowFailException

from meshing_core.errors import MeshingError


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def airflow_outcomes(prefix: str = "") -> Iterator[None]:
    """``with airflow_outcomes():`` user errors fail the task (no retries); others retry."""
    try:
        yield
    except MeshingError as exc:
        raise AirflowFailException(prefix + one_line(exc)) from exc
