"""Counting the stand-in's storage calls.

When ``PCG_STANDIN_CALLS`` names a file, every outermost call of a decorated method appends one
line with its name to it (opened in append mode per call, so several processes may share the
file). Calls made while another counted call is running in the same thread are not counted.
"""

import functools
import os
import threading

CALLS_ENV = "PCG_STANDIN_CALLS"

_state = threading.local()


def record(name: str) -> None:
    path = os.environ.get(CALLS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(name + "\n")


def counted(name: str):
    """Decorator: count outermost calls of the method as ``name``."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            depth = getattr(_state, "depth", 0)
            if depth == 0:
                record(name)
            _state.depth = depth + 1
            try:
                return method(*args, **kwargs)
            finally:
                _state.depth = depth

        return wrapper

    return decorate
