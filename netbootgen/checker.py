"""Reading raw TOML tables into typed values, recording every problem (key path, value) instead of raising;
and how keys, values and unresolved names are shown in those messages."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")


def part(k: str) -> str:
    """One component of a key path, quoted as TOML would need it ('node1', '"node 1"')."""
    return k if BARE_KEY_RE.match(k) else json.dumps(k, ensure_ascii=False)


def show(value: Any, limit: int = 60) -> str:
    """repr() of a bad value, shortened so that one error stays one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


def known(kind: str, name: str, names: Iterable[str]) -> str:
    """'(did you mean 'virtio'?)', or the few names there are, for a reference that does not resolve."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=3) if len(names) <= 1000 else []  # keep big fleets fast
    if close:
        return f"(did you mean {' or '.join(repr(n) for n in close)}?)"
    if not names:
        return f"({kind}: none)"
    if len(names) <= 8:
        return f"({kind}: {', '.join(names)})"
    return f"(none of the {len(names)} {kind} is close)" if len(names) <= 1000 else f"({len(names)} {kind} defined)"


class Checker:
    """Reads raw TOML tables into values, recording problems ('KEY: message') in `problems`."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.bad(key, f"must be a table, not {show(raw)}")
            return {}
        return raw

    def keys(self, raw: dict[str, Any], key: str | None, allowed: set[str],
             required: Iterable[str] = ()) -> None:
        if raw.keys() <= allowed and raw.keys() >= set(required):
            return
        prefix = f"{key}." if key else ""
        for k in sorted(raw):
            if k not in allowed:
                close = difflib.get_close_matches(k, sorted(allowed), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(allowed))}"
                self.bad(f"{prefix}{part(k)}", f"unknown key {k!r} ({hint})")
        for k in sorted(set(required) - raw.keys()):
            self.bad(f"{prefix}{k}", "is required")

    def name(self, name: str, key: str) -> bool:
        if not NAME_RE.match(name) or ".." in name:
            self.bad(key, f"name {show(name)} is not safe as a file or unit name (letters, digits, '_', '.', "
                          "'-', starting with a letter or digit; no '/', '..', spaces or shell characters; "
                          "at most 64)")
            return False
        return True

    def str_(self, raw: dict[str, Any], k: str, key: str, default: str | None = None) -> str | None:
        v = raw.get(k, default)
        if v is not None and not isinstance(v, str):
            self.bad(f"{key}.{k}", f"must be a string, not {show(v)}")
            return default
        return v

    def int_(self, raw: dict[str, Any], k: str, key: str, default: int | None, lo: int, hi: int,
             why: str = "") -> int | None:
        """The integer at `k` (`default` when absent), or None after reporting a bad one."""
        if k not in raw:
            return default
        v = raw[k]
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(f"{key}.{k}", f"must be an integer, not {show(v)}")
            return None
        if not lo <= v <= hi:
            self.bad(f"{key}.{k}", f"{v!r} is out of range ({lo}–{hi}{'; ' + why if why else ''})")
            return None
        return v

    def bool_(self, raw: dict[str, Any], k: str, key: str) -> bool:
        v = raw.get(k, False)
        if not isinstance(v, bool):
            self.bad(f"{key}.{k}", f"must be true or false, not {show(v)}")
            return False
        return v

    def strlist(self, raw: dict[str, Any], k: str, key: str) -> tuple[str, ...]:
        v = raw.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.bad(f"{key}.{k}", f"must be a list of strings, not {show(v)}")
            return ()
        return tuple(v)

    def ym(self, value: Any, key: str) -> str:
        if value not in ("y", "m"):
            self.bad(key, f"must be \"y\" or \"m\", not {show(value)}")
            return "m"
        return str(value)
