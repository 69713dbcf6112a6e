"""What every command line of the project shares (``clipper``, the frontends, the model runtime, the image
builder, the benchmarks).

`ArgumentParser` is argparse's with `HelpFormatter`, which ends every option's help with its default, and
its subcommands get the same. The ``type=`` functions below refuse a bad value with one line that names
the flag (argparse then exits with status 2, no traceback); the tuples are the closed sets of values given
as ``choices=``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .input_types import INPUT_TYPE_CODES, parse_input_type

#: ``--log-level`` values (case-insensitive with ``type=str.upper``).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Canonical input type names; `input_type` maps Clipper's aliases (``d``, ``ints``, ...) onto them.
INPUT_TYPES = tuple(INPUT_TYPE_CODES)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends ``(default: X)`` to every option's help, unless the help
    already says its default (``(default`` or ``%(default)``: for a secret read from the environment, say
    the variable, never the value). Nothing is shown for a None default; a switch shows ``off``/``on`` and a
    list its items joined by commas."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or "(default" in help or "%(default)" in help
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return help
        if isinstance(default, bool) and action.nargs == 0:
            shown = "on" if default else "off"
        elif isinstance(default, (list, tuple)):
            shown = ",".join(map(str, default)) or "none"
        else:
            shown = str(default)
        return f"{help} (default: {shown.replace('%', '%%')})".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with `HelpFormatter` as its default formatter; `add_subparsers` makes parsers of
    this class, so subcommands show their defaults too."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = HelpFormatter,
                 **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def positive_float(text: str) -> float:
    """A number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def input_type(text: str) -> str:
    """An input type name or one of Clipper's aliases, as its canonical name (give ``choices=INPUT_TYPES``
    too, for the help); an unknown name is refused with the allowed names and their aliases."""
    try:
        return parse_input_type(text)[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
