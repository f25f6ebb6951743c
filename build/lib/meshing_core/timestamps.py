"""Meshing timestamps: RFC 3339 or Unix seconds in, float Unix seconds (UTC) everywhere inside."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from meshing_core.errors import MeshingError

_UNIX = re.compile(r"^-?\d+(\.\d+)?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


_MIN_SECONDS = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_MAX_SECONDS = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
_HINT = "give RFC 3339 (e.g. 2021-03-01T00:00:00Z) or Unix seconds"


class TimestampError(MeshingError):
    """A timestamp that is neither RFC 3339 nor Unix seconds."""


def parse_timestamp(value: str | float | int | None) -> float:
    """Return Unix seconds for an RFC 3339 string or Unix seconds; ``None`` means now."""
    if value is None:
        return now()
    if isinstance(value, int | float):
        return _in_range(float(value), value)
    text = str(value).strip()
    if _UNIX.match(text):
        return _in_range(float(text), value)
    if _RFC3339.match(text):
        normalised = text.replace("z", "Z").replace("Z", "+00:00").replace("t", "T")
        try:
            return datetime.fromisoformat(normalised).timestamp()
        except ValueError as exc:
            raise TimestampError(f"malformed timestamp {value!r} ({exc}): {_HINT}") from exc
    raise TimestampError(f"malformed timestamp {value!r}: {_HINT}")


def _in_range(seconds: float, value: object) -> float:
    """Unix seconds a calendar can show (years 1..9999); milliseconds are the usual mistake."""
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise TimestampError(
            f"timestamp {value!r} is outside years 1..9999 (milliseconds instead of seconds?): {_HINT}"
        )
    return seconds


def now() -> float:
    """The current time, rounded to milliseconds so it survives a round trip through text."""
    return round(time.time(), 3)


def format_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, with milliseconds only when needed."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
