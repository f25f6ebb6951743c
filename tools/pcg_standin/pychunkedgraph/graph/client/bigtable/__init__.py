"""BigTable client configuration records (kept for callers that build a client info)."""

from collections import namedtuple
from os import environ

DEFAULT_PROJECT = "neuromancer-seung-import"
DEFAULT_INSTANCE = "pychunkedgraph"

BigTableConfig = namedtuple(
    "BigTableConfig",
    ("PROJECT", "INSTANCE", "ADMIN", "READ_ONLY", "CREDENTIALS", "MAX_ROW_KEY_COUNT"),
    defaults=(
        environ.get("BIGTABLE_PROJECT", DEFAULT_PROJECT),
        environ.get("BIGTABLE_INSTANCE", DEFAULT_INSTANCE),
        False,
        True,
        None,
        1000,
    ),
)


def get_client_info(project=None, instance=None, admin=False, read_only=True):
    """A ``BigTableConfig`` from the arguments, falling back to the environment."""
    return BigTableConfig(
        PROJECT=project or environ.get("BIGTABLE_PROJECT", DEFAULT_PROJECT),
        INSTANCE=instance or environ.get("BIGTABLE_INSTANCE", DEFAULT_INSTANCE),
        ADMIN=admin,
        READ_ONLY=read_only,
    )
