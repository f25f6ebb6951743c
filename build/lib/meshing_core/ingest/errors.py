"""The one error type of the builder (kept apart so every build module can raise it)."""

from __future__ import annotations

from meshing_core.errors import MeshingError


class BuildError(MeshingError):
    """An input the graph builder cannot use; the message names it and the fix."""
