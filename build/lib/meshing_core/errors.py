"""User-facing errors: each carries one line naming the problem and the fix.

The CLI prints ``error: <message>`` and exits 2 for any ``MeshingError``; anything else is a bug.
"""

from __future__ import annotations


class MeshingError(ValueError):
    """Base of every error caused by input, configuration or stored data (not by a bug)."""
