"""Names that become path segments in every store (style names, run ids): one rule, checked
before anything is written, so no name can escape its directory or differ only by case."""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "InvalidName", "is_valid_name", "validate_name"]

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_NAME_RE = re.compile(NAME_PATTERN)


class InvalidName(ValueError):
    """An identifier outside ``[a-z0-9][a-z0-9._-]{0,63}`` (or another malformed identifier)."""


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def validate_name(name: object, what: str = "style name") -> str:
    """Return ``name`` if it is a valid name, else raise :class:`InvalidName` naming the value."""
    if not is_valid_name(name):
        raise InvalidName(
            f"invalid {what} {name!r}: must be 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name
