"""How far a run is, per layer: the numbers ``status`` prints and the Airflow progress view shows.

Computed from the records only (``RecordStore.layer_tally``: the rolled-up batch objects'
summaries, plus the chunk objects of batches in flight), so the command line and the UI can
never disagree. Besides counts, a layer gets its rate (chunks per minute between its first and last
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
    unclosed: int
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

    def eta_seconds(self) -> float | None:
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
            "unclosed": self.unclosed,
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


def _grid(per_xy: np.ndarray, bounds: Coords, block: int) -> np.ndarray:
    """Per (x, y) counts summed into ``block`` x ``block`` cells."""
    bx, by, _ = bounds
    cx, cy = -(-bx // block), -(-by // block)
    padded = np.zeros((cx * block, cy * block), dtype=np.int64)
    padded[:bx, :by] = per_xy.reshape(bx, by)
    return padded.reshape(cx, block, cy, block).sum(axis=(1, 3))


def layer_progress(store: RecordStore, layer: int, *, grid: bool = True) -> LayerProgress:
    """Counts, rate and (with ``grid``) the x-y grid of one layer at the store's timestamp."""
    tally = store.layer_tally(layer)
    bounds = layer_bounds(store.meta, layer)
    mask = tally.done_mask if grid else None
    progress = LayerProgress(
        layer=int(layer),
        total=chunk_total(store.meta, layer),
        done=tally.done if mask is None else int(np.count_nonzero(mask)),
        empty=tally.empty,
        failed=len(tally.failures),
        fragments=tally.fragments,
        bytes=tally.bytes,
        batches_recorded=tally.batches_recorded,
        unclosed=tally.unclosed,
        first_done=tally.first,
        last_done=tally.last,
        failures=tally.failures,
    )
    if mask is not None:
        bx, by, bz = bounds
        block = max(1, -(-max(bx, by) // MAX_GRID_SIDE))
        done_xy = mask.reshape(bx * by, bz).sum(axis=1, dtype=np.int64)
        failed_xy = np.zeros(bx * by, dtype=np.int64)
        for x, y, _ in tally.failures:
            failed_xy[x * by + y] += 1
        progress.grid_block = block
        progress.grid_done = _grid(done_xy, bounds, block)
        progress.grid_failed = _grid(failed_xy, bounds, block)
        progress.grid_total = _grid(np.full(bx * by, bz, dtype=np.int64), bounds, block)
    return progress


def run_progress(store: RecordStore, n_layers: int, *, grid: bool = True) -> list[LayerProgress]:
    """Every layer 2..n_layers of the store's run."""
    return [layer_progress(store, layer, grid=grid) for layer in range(2, int(n_layers) + 1)]
