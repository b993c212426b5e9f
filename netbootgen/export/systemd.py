"""systemd's escaping rules, for unit names and for values written into unit files."""

from __future__ import annotations

import re
import string
from functools import cache

_UNQUOTABLE = re.compile(r'[\x00-\x1f\x7f"\\]')
_NEEDS_QUOTES = re.compile(r"[ ';]")
# Characters unit_name_escape() leaves alone (systemd src/basic/unit-name.c VALID_CHARS minus '-' and '\').
_PLAIN = frozenset((string.ascii_letters + string.digits + ":_.").encode())


def _escape_bytes(data: bytes) -> str:
    out = []
    for i, b in enumerate(data):
        if b == ord("/"):
            out.append("-")
        elif b in _PLAIN and not (i == 0 and b == ord(".")):
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def systemd_escape(value: str, *, path: bool = False) -> str:
    """What `systemd-escape [--path] VALUE` prints: '/' becomes '-'; a leading '.' and every byte that is
    not a letter, digit, ':', '_' or '.' become '\\xNN'. With `path`, the path is simplified first (repeated
    '/' and '.' components dropped, leading and trailing '/' removed; '/' alone gives '-'), and a '..'
    component is a ValueError, as for systemd-escape."""
    if path:
        parts = [p for p in value.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"{value!r} is not a normalized file system path")
        if not parts:
            if value and not value.startswith("/"):
                raise ValueError(f"{value!r} is not an absolute file system path")
            return "-"
        value = "/".join(parts)
    return _escape_bytes(value.encode())


@cache
def device_unit(interface: str) -> str:
    """The device unit systemd gives network interface `interface` (SYSTEMD_ALIAS in 99-systemd.rules)."""
    return systemd_escape(f"/sys/subsystem/net/devices/{interface}", path=True) + ".device"


def unit_value_problem(value: str) -> str | None:
    """Why `value` cannot be written into a unit file by unit_quote(), or None."""
    bad = _UNQUOTABLE.search(value)
    if bad is None:
        return None
    if bad.group() in '"\\':
        return f"{value!r} contains a double quote or backslash"
    return f"{value!r} contains a newline or control character"


def unit_quote(value: str, *, command: bool = False) -> str:
    """`value` as one word of a unit setting: '%' doubled (specifiers), and '$' doubled in command lines
    (environment variables); double-quoted when it holds a space, a quote or ';'. Values that
    unit_value_problem() rejects are a ValueError."""
    problem = unit_value_problem(value)
    if problem:
        raise ValueError(problem)
    value = value.replace("%", "%%")
    if command:
        value = value.replace("$", "$$")
    if not value or _NEEDS_QUOTES.search(value):
        value = f'"{value}"'
    return value
