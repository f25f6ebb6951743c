"""Datasets built for object storage: built in a local folder as always, then uploaded.

The upload writes the exact layout of a local ``--out`` folder and puts ``graph.yaml`` last, so
a reader sees either no dataset or a whole one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from meshing_core.config import CONFIG_NAME
from meshing_core.errors import MeshingError
from meshing_core.store import files
from meshing_core.store.paths import dataset_location, local_path, split_name

log = logging.getLogger(__name__)


class PublishError(MeshingError):
    """A dataset location that cannot be written."""


def build_at(out: str | Path, build: Callable[[Path], Path]) -> str:
    """Run ``build(folder)`` for ``out`` (a path or URL); return where its graph.yaml is.

    A local ``out`` is built in place. For ``s3://`` / ``gs://`` the bucket is checked first
    (before any work), the dataset is built in a temporary folder named like the URL's last
    part (so the graph's name is the same as a local build's) and uploaded.
    """
    location = dataset_location(out, "--out")
    folder = local_path(location)
    if folder is not None:
        return str(build(folder))
    if location.count("/") < 3:
        raise PublishError(
            f"--out {location} names a bucket only: add a folder, e.g. {location}/ds"
        )
    try:
        found = files.bucket_exists(location)
    except Exception as exc:  # no endpoint, no credentials: the store's own errors
        raise PublishError(f"--out {location}: the bucket cannot be reached ({exc})") from None
    if not found:
        raise PublishError(
            f"--out {location}: bucket {location.split('/')[2]!r} does not exist (or is not "
            "visible with these credentials): create it first"
        )
    with tempfile.TemporaryDirectory(prefix="meshing-build-") as tmp:
        local = Path(tmp) / split_name(location)[1]
        build(local)
        try:
            files.upload_folder(local, location, last=CONFIG_NAME)
        except Exception as exc:
            raise PublishError(f"--out {location}: upload failed ({exc})") from None
    return f"{location}/{CONFIG_NAME}"
