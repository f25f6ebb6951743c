"""How far a run is, per layer: the numbers ``status`` prints and the Airflow progress view shows.

Computed from the records only (``RecordStore.layer_columns``: the rolled-up batch objects as
arrays, plus the chunk objects of batches in flight), so the command line and the UI can never
disagree. Besides counts, a layer gets its rate (chunks per minute between its first and last
completion), an ETA, and its chunk grid seen from above: per x-y cell (z collapsed), how many
chunks are done and how many failed, so a stuck region of the volume shows as a patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshing_core.run.records import Coords, RecordStore, chunk_total, layer_bounds

#: Largest grid side sent to a viewer; bigger grids are summed into blocks.
MAX_GRID_SIDE = 256


@dataclass
class LayerProgress:
    """One layer of one run, as counted from its records."""

    layer: int
    total: int
    done: int
    empty: int
    failed: int
    fragments: int
    bytes: int
    batches_recorded: int
    first_done: float | None
    last_done: float | None
    failures: dict[Coords, dict[str, Any]] = field(default_factory=dict)
    grid_done: np.ndarray | None = None  # (cells x, cells y) chunks done per cell
    grid_failed: np.ndarray | None = None
    grid_total: np.ndarray | None = None
    grid_block: int = 1  # layer chunks per grid cell side (x and y)

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed)

    @property
    def chunks_per_minute(self) -> float | None:
        """Completions per minute between the layer's first and last completion."""
        if self.first_done is None or self.last_done is None or self.done < 2:
            return None
        span = self.last_done - self.first_done
        return None if span <= 0 else 60.0 * (self.done - 1) / span

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds until the pending chunks are done at the current rate (None: no rate)."""
        rate = self.chunks_per_minute
        if not self.pending:
            return 0.0
        if rate is None or rate <= 0:
            return None
        return 60.0 * self.pending / rate

    def as_dict(self, *, grid: bool = False, failures_shown: int | None = None) -> dict[str, Any]:
        shown = sorted(self.failures.items())
        if failures_shown is not None:
            shown = shown[:failures_shown]
        out: dict[str, Any] = {
            "layer": self.layer,
            "chunks_total": self.total,
            "chunks_done": self.done,
            "chunks_empty": self.empty,
            "chunks_failed": self.failed,
            "chunks_pending": self.pending,
            "fragments": self.fragments,
            "bytes": self.bytes,
            "batches_recorded": self.batches_recorded,
            "first_done": self.first_done,
            "last_done": self.last_done,
            "chunks_per_minute": self.chunks_per_minute,
            "eta_seconds": self.eta_seconds(),
            "failures": [{"chunk": list(coords), **info} for coords, info in shown],
        }
        if grid and self.grid_total is not None:
            out["grid"] = {
                "block": self.grid_block,
                "total": self.grid_total.tolist(),
                "done": self.grid_done.tolist(),  # type: ignore[union-attr]
                "failed": self.grid_failed.tolist(),  # type: ignore[union-attr]
            }
        return out


def _cells(index: np.ndarray, bounds: Coords, block: int) -> np.ndarray:
    """Grid cell (x-major) of each layer chunk index, z collapsed, x and y in blocks."""
    _, by, bz = bounds
    xy = index // np.uint64(bz)
    x, y = xy // np.uint64(by), xy % np.uint64(by)
    cy = -(-by // block)
    return (x // np.uint64(block)) * np.uint64(cy) + (y // np.uint64(block))


def _grid_total(bounds: Coords, block: int) -> np.ndarray:
    bx, by, bz = bounds
    cx, cy = -(-bx // block), -(-by // block)
    xs = np.minimum(np.arange(cx) * block + block, bx) - np.arange(cx) * block
    ys = np.minimum(np.arange(cy) * block + block, by) - np.arange(cy) * block
    return np.outer(xs, ys).astype(np.int64) * bz


def layer_progress(store: RecordStore, layer: int, *, grid: bool = True) -> LayerProgress:
    """Counts, rate and (with ``grid``) the x-y grid of one layer at the store's timestamp."""
    cols, failures, recorded = store.layer_columns(layer)
    bounds = layer_bounds(store.meta, layer)
    progress = LayerProgress(
        layer=int(layer),
        total=chunk_total(store.meta, layer),
        done=int(cols.index.size),
        empty=int(np.count_nonzero(cols.fragments == 0)),
        failed=len(failures),
        fragments=int(cols.fragments.sum(dtype=np.int64)),
        bytes=int(cols.bytes.sum(dtype=np.uint64)),
        batches_recorded=recorded,
        first_done=float(cols.time.min()) if cols.time.size else None,
        last_done=float(cols.time.max()) if cols.time.size else None,
        failures=failures,
    )
    if grid:
        block = max(1, -(-max(bounds[0], bounds[1]) // MAX_GRID_SIDE))
        cx, cy = -(-bounds[0] // block), -(-bounds[1] // block)
        progress.grid_block = block
        progress.grid_total = _grid_total(bounds, block)
        progress.grid_done = np.bincount(
            _cells(cols.index, bounds, block).astype(np.int64), minlength=cx * cy
        ).reshape(cx, cy)
        failed_index = np.array(
            [(x * bounds[1] + y) * bounds[2] + z for x, y, z in failures], dtype=np.uint64
        )
        progress.grid_failed = np.bincount(
            _cells(failed_index, bounds, block).astype(np.int64), minlength=cx * cy
        ).reshape(cx, cy)
    return progress


def run_progress(store: RecordStore, n_layers: int, *, grid: bool = True) -> list[LayerProgress]:
    """Every layer 2..n_layers of the store's run."""
    return [layer_progress(store, layer, grid=grid) for layer in range(2, int(n_layers) + 1)]
