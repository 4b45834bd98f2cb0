"""Errors a user can cause; the API turns them into 4xx responses with their message."""

from rest_framework.exceptions import PermissionDenied


class NotFound(Exception):
    """The object does not exist *or* the user may not see it (indistinguishable on purpose)."""


class InvalidInput(Exception):
    """A user-caused problem with a clear message (becomes a 400)."""


class UnsupportedType(Exception):
    """The upload's content is not a document type Cairn reads (becomes a 415)."""


class Forbidden(PermissionDenied):
    """The user may see the object but not do this to it (a viewer deleting; becomes a 403).

    A DRF ``PermissionDenied``, so the API answers 403 in the usual error shape
    and records the denial; objects the user may not see raise ``NotFound``.
    """


class InvalidPolicy(InvalidInput):
    """A policy that does not parse; ``position`` is the 0-based offset of the problem (a 400)."""

    def __init__(self, error: object) -> None:
        super().__init__(str(error))
        self.position = getattr(error, "position", None)
        self.reason = getattr(error, "message", str(error))
