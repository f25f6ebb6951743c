"""Storage clients. The stand-in has one: ``StandinClient`` (a table folder with a SQLite file)."""

from collections import namedtuple

from .standin import StandinClient

BigTableClient = StandinClient

BackendClientInfo = namedtuple("BackendClientInfo", ("TYPE", "CONFIG"), defaults=(None, None))


def get_default_client_info():
    """The client info PyChunkedGraph builds from the environment (unused by the stand-in)."""
    from .bigtable import get_client_info

    return BackendClientInfo(CONFIG=get_client_info(admin=True, read_only=False))
