"""Exceptions of the admin API and the container managers (same names and messages as `clipper_admin.exceptions`).

Imports nothing, so that every layer can raise them; re-exported by `clipper`, `clipper.admin` and
`clipper.admin.exceptions`.
"""

from __future__ import annotations


class ClipperException(Exception):
    """A generic exception indicating that Clipper encountered a problem; the text is in `.msg`."""

    def __init__(self, msg: str, *args: object) -> None:
        self.msg = msg
        super().__init__(msg, *args)

    def __str__(self) -> str:
        return str(self.msg)


class UnconnectedException(ClipperException):
    """A ``ClipperConnection`` must be connected to a Clipper cluster to issue this command."""

    def __init__(self, *args: object) -> None:
        message = (
            "No connection to Clipper cluster. Call ClipperConnection.connect to "
            "connect to an existing cluster or ClipperConnnection.start_clipper to "
            "create a new one"
        )
        self.message = message
        super().__init__(message, *args)
