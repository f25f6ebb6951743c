"""Direct binding to meshoptimizer's ``meshopt_simplifyWithAttributes``.

The PyPI wrapper declares no argument types for this function (a float target cannot be passed)
and converts inputs on every call; we need its ``vertex_lock`` array to pin chunk-face vertices
and to repair spots where the simplifier's error estimate was wrong. We load our own handle to
the wrapper's shared library so our declarations never touch the wrapper's function objects.
ctypes releases the GIL for the duration of the call.
"""

from __future__ import annotations

import ctypes
from functools import cache

import meshoptimizer
import numpy as np

LOCK_BORDER = 1 << 0
ERROR_ABSOLUTE = 1 << 2


@cache
def _simplify_fn() -> ctypes._CFuncPtr:
    lib = ctypes.CDLL(meshoptimizer._loader.lib._name)
    fn = lib.meshopt_simplifyWithAttributes
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    fn.argtypes = [
        ptr,  # destination
        ptr,  # indices
        size,  # index_count
        ptr,  # vertex_positions
        size,  # vertex_count
        size,  # vertex_positions_stride
        ptr,  # vertex_attributes
        size,  # vertex_attributes_stride
        ptr,  # attribute_weights
        size,  # attribute_count
        ptr,  # vertex_lock
        size,  # target_index_count
        ctypes.c_float,  # target_error
        ctypes.c_uint,  # options
        ptr,  # result_error
    ]
    fn.restype = size
    return fn


_NO_ATTRIBUTES = np.zeros(1, dtype=np.float32)


def simplify(
    vertices: np.ndarray,
    indices: np.ndarray,
    target_error: float,
    lock: np.ndarray | None = None,
    options: int = LOCK_BORDER | ERROR_ABSOLUTE,
) -> np.ndarray:
    """Simplify as far as ``target_error`` allows; return the kept triangles (K, 3) uint32.

    ``vertices`` float32 (N, 3) C-contiguous, ``indices`` uint32 (M, 3) C-contiguous, ``lock``
    uint8 (N,) or None. Output indices refer to the input vertices (meshopt only collapses edges
    onto existing vertices, so every output vertex is an input vertex).
    """
    if vertices.dtype != np.float32 or not vertices.flags.c_contiguous:
        raise TypeError("vertices must be C-contiguous float32")
    if indices.dtype != np.uint32 or not indices.flags.c_contiguous:
        raise TypeError("indices must be C-contiguous uint32")
    if lock is not None and (
        lock.dtype != np.uint8 or not lock.flags.c_contiguous or lock.shape[0] != len(vertices)
    ):
        raise TypeError("lock must be C-contiguous uint8, one per vertex")
    out = np.empty(indices.size, dtype=np.uint32)
    result_error = ctypes.c_float(0.0)
    count = _simplify_fn()(
        out.ctypes.data,
        indices.ctypes.data,
        indices.size,
        vertices.ctypes.data,
        len(vertices),
        12,
        _NO_ATTRIBUTES.ctypes.data,
        4,
        _NO_ATTRIBUTES.ctypes.data,
        0,
        None if lock is None else lock.ctypes.data,
        0,
        float(target_error),
        options,
        ctypes.addressof(result_error),
    )
    return out[:count].reshape(-1, 3)
