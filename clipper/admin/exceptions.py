"""Exceptions raised by the admin API, where `clipper_admin.exceptions` has them (defined in `clipper.exceptions`)."""

from __future__ import annotations

from ..exceptions import ClipperException, UnconnectedException

__all__ = ["ClipperException", "UnconnectedException"]
