"""Stand-in for `clipper_admin.deployers`."""

from . import python

__all__ = ["python"]
