"""BigTable columns ("attributes") as PyChunkedGraph names them.

An attribute is a named tuple (key, family_id, serializer), so attributes compare and hash by
value like the real ones. The serializer here only records the value type: the stand-in keeps
values deserialized. The stand-in's storage models the ``Hierarchy`` columns; the others exist
so that code naming them imports, and reading them raises ``NotImplementedError``.
"""

from typing import Any, NamedTuple

import numpy as np

from .utils import basetypes


class _Serializer(NamedTuple):
    """What a column holds: its numpy dtype (or Python type) and, for arrays, its shape."""

    basetype: Any
    shape: tuple | None = None


class _AttributeType(NamedTuple):
    key: bytes
    family_id: str
    serializer: _Serializer


class _Attribute(_AttributeType):
    __slots__ = ()
    _attributes: dict = {}

    def __init__(self, **kwargs):
        super().__init__()
        _Attribute._attributes[(kwargs["family_id"], kwargs["key"])] = self

    @property
    def basetype(self):
        return self.serializer.basetype

    @property
    def index(self):
        return int(self.key.decode("utf-8").split("_")[-1])


class _AttributeArray:
    """A family of numbered columns (``pattern % index``)."""

    def __init__(self, pattern: bytes, family_id: str, serializer: _Serializer):
        self._pattern = pattern
        self._family_id = family_id
        self._serializer = serializer
        for index in range(20):  # registered up front so that from_key finds them
            self[index]  # noqa: B018

    def __getitem__(self, item) -> _Attribute:
        return _Attribute(
            key=self._pattern % item, family_id=self._family_id, serializer=self._serializer
        )

    @property
    def pattern(self):
        return self._pattern

    @property
    def basetype(self):
        return self._serializer.basetype


_IDS = _Serializer(basetypes.NODE_ID, (-1,))
_EDGES = _Serializer(basetypes.NODE_ID, (-1, 2))


class Concurrency:
    Counter = _Attribute(key=b"counter", family_id="1", serializer=_Serializer(basetypes.COUNTER))
    Lock = _Attribute(key=b"lock", family_id="0", serializer=_Serializer(np.uint64))
    IndefiniteLock = _Attribute(
        key=b"indefinite_lock", family_id="0", serializer=_Serializer(np.uint64)
    )


class Connectivity:
    Affinity = _Attribute(
        key=b"affinities", family_id="0", serializer=_Serializer(np.dtype("<f4"), (-1,))
    )
    Area = _Attribute(key=b"areas", family_id="0", serializer=_Serializer(np.dtype("<u8"), (-1,)))
    CrossChunkEdge = _AttributeArray(
        pattern=b"atomic_cross_edges_%d", family_id="3", serializer=_EDGES
    )
    FakeEdges = _Attribute(key=b"fake_edges", family_id="3", serializer=_EDGES)


class Hierarchy:
    Child = _Attribute(key=b"children", family_id="0", serializer=_IDS)
    FormerParent = _Attribute(key=b"former_parents", family_id="0", serializer=_IDS)
    NewParent = _Attribute(key=b"new_parents", family_id="0", serializer=_IDS)
    Parent = _Attribute(key=b"parents", family_id="0", serializer=_Serializer(basetypes.NODE_ID))


class GraphMeta:
    key = b"meta"
    Meta = _Attribute(key=key, family_id="0", serializer=_Serializer(object))


class GraphVersion:
    key = b"version"
    Version = _Attribute(key=key, family_id="0", serializer=_Serializer(str))


def from_key(family_id: str, key: bytes) -> _Attribute:
    """The attribute stored under ``family_id:key``."""
    try:
        return _Attribute._attributes[(family_id, key)]
    except KeyError:
        raise KeyError(f"Unknown key {family_id}:{key.decode()}") from None
