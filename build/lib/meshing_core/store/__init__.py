"""Mesh storage: sharded shards (``sharding``), cloud-path files (``files``), names under the
mesh dir (``layout``), one-time mesh setup (``setup``) and read-back checks (``verify``)."""
