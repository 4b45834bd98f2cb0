"""Errors a user can cause; the API turns them into 4xx responses with their message."""


class NotFound(Exception):
    """The object does not exist *or* the user may not see it (indistinguishable on purpose)."""


class InvalidInput(Exception):
    """A user-caused problem with a clear message (becomes a 400)."""


class UnsupportedType(Exception):
    """The upload's content is not a document type Cairn reads (becomes a 415)."""
