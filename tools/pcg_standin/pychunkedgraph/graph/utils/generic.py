"""Generic helpers: layer bitmasks, logarithms and BigTable-compatible timestamps."""

import datetime

import numpy as np

_UTC = datetime.UTC


def log_n(arr, n):
    """Logarithm of ``arr`` to base ``n``."""
    if n == 2:
        return np.log2(arr)
    if n == 10:
        return np.log10(arr)
    return np.log(arr) / np.log(n)


def compute_bitmasks(n_layers: int, s_bits_atomic_layer: int = 8) -> dict[int, int]:
    """Bits per chunk coordinate for every layer 1..n_layers.

    A layer needs enough bits to address its chunks along one axis: ``n_layers - layer`` (at
    least 1). Layer 2 uses at least ``s_bits_atomic_layer`` bits and layer 1 shares layer 2's.
    """
    masks: dict[int, int] = {}
    for layer in range(n_layers, 1, -1):
        bits = max(1, n_layers - layer)
        if layer == 2:
            if s_bits_atomic_layer < bits:
                raise ValueError(f"{s_bits_atomic_layer} bits is not enough for encoding.")
            bits = max(s_bits_atomic_layer, bits)
        masks[layer] = int(bits)
    masks[1] = masks[2]
    return masks


def get_max_time():
    """A timestamp far in the future (naive, as PyChunkedGraph returns it)."""
    return datetime.datetime(9999, 12, 31, 23, 59, 59, 0)


def get_min_time():
    """The earliest timestamp PyChunkedGraph uses (naive, 2000-01-01)."""
    return datetime.datetime(2000, 1, 1)


time_min = get_min_time


def _get_google_compatible_time_stamp(
    time_stamp: datetime.datetime, round_up: bool = False
) -> datetime.datetime:
    """``time_stamp`` moved to a whole millisecond (BigTable's resolution), down unless ``round_up``."""
    extra = time_stamp.microsecond % 1000
    if extra == 0:
        return time_stamp
    if round_up:
        return time_stamp + datetime.timedelta(microseconds=1000 - extra)
    return time_stamp - datetime.timedelta(microseconds=extra)


def get_valid_timestamp(timestamp):
    """``timestamp`` as a tz-aware datetime at a whole millisecond (rounded down).

    None means now; a naive datetime is taken as UTC.
    """
    if timestamp is None:
        timestamp = datetime.datetime.now(_UTC)
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=_UTC)
    return _get_google_compatible_time_stamp(timestamp, round_up=False)
