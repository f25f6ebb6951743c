"""The exception hierarchy of PyChunkedGraph (the classes a caller may catch)."""

from http import HTTPStatus


class ChunkedGraphError(Exception):
    """Base class of every ChunkedGraph error."""


class LockingError(ChunkedGraphError):
    """A root lock could not be taken."""


class PreconditionError(ChunkedGraphError):
    """An operation's preconditions do not hold."""


class PostconditionError(ChunkedGraphError):
    """An operation's postconditions do not hold."""


class ChunkedGraphAPIError(ChunkedGraphError):
    """An error with an HTTP status, raised by API calls."""

    status_code = None

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return f"[{self.status_code}]: {self.message}"


class ClientError(ChunkedGraphAPIError):
    """4xx errors."""


class BadRequest(ClientError):
    status_code = HTTPStatus.BAD_REQUEST


class Unauthorized(ClientError):
    status_code = HTTPStatus.UNAUTHORIZED


class Forbidden(ClientError):
    status_code = HTTPStatus.FORBIDDEN


class Conflict(ClientError):
    status_code = HTTPStatus.CONFLICT


class ServerError(ChunkedGraphAPIError):
    """5xx errors."""


class InternalServerError(ServerError):
    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class GatewayTimeout(ServerError):
    status_code = HTTPStatus.GATEWAY_TIMEOUT
