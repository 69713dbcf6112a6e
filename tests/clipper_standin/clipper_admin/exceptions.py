"""Stand-in for `clipper_admin.exceptions`."""

from clipper.exceptions import ClipperException, UnconnectedException

__all__ = ["ClipperException", "UnconnectedException"]
