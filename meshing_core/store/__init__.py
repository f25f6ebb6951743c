"""Mesh storage, a leaf (it imports nothing of ours but ``ids`` and ``errors``): sharded shards
(``sharding``), files on any cloud path (``files``), path checks (``paths``), names under the
mesh dir (``layout``) and read-back checks by independent readers (``verify``)."""
