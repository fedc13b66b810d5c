"""The serving stage's one error type, shared by the server (which renders it as TF Serving's
``{"error": "..."}`` body with its HTTP status) and the client (which raises it for such a body)."""

from __future__ import annotations

__all__ = ["ServingError"]


class ServingError(Exception):
    """A request a model server refused or could not answer.

    Attributes:
        message: the server's error message (TF Serving's ``"error"`` field), or a description
            of the transport failure.
        status: the HTTP status code (4xx/5xx), or ``None`` when no response arrived (connection
            refused, timeout, ...).
        headers: extra response headers a server should send with the error (e.g.
            ``Connection: close``); empty on the client side.
    """

    def __init__(self, message: str, status: int | None = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status}: {self.message}"

    def __reduce__(self):
        return type(self), (self.message, self.status, self.headers)
