"""Strict TOML reading: unknown keys and wrong types are errors naming file and field."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfscope.errors import SpecError


def read_text(path: Path, what: str) -> str:
    """A spec file's text, or a SpecError naming the file (``what``: the fix's noun)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(str(path), None, f"cannot read file ({e.strerror})",
                        "check the path") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), None, "not UTF-8 text", f"pass {what}") from None


def read_toml(path: Path) -> dict[str, Any]:
    text = read_text(path, "a TOML spec file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), None, f"invalid TOML ({e})", "fix the syntax") from None


class Fields:
    """Typed access to one TOML table that remembers which keys were used.

    ``done()`` raises on any key that was not read, so a typo is an error, not a silent default.
    """

    def __init__(self, table: Mapping[str, Any], file: str, prefix: str = ""):
        if not isinstance(table, Mapping):
            raise SpecError(file, prefix or None, "expected a table", None)
        self.t, self.file, self.prefix = table, file, prefix
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.t:
            if default is ...:
                self._typo(key)
                raise SpecError(self.file, self._name(key), "missing required field",
                                f"add `{key} = ...`")
            return default
        v = self.t[key]
        ok = isinstance(v, typ) and not (isinstance(v, bool) and typ in (int, float, (int, float)))
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise SpecError(self.file, self._name(key),
                            f"expected {names}, got {type(v).__name__} {v!r}", None)
        return v

    def _typo(self, key: str) -> None:
        """A required key is missing: if an unknown key looks like it, name that one."""
        import difflib

        close = difflib.get_close_matches(key, [k for k in self.t if k not in self.used], n=1,
                                          cutoff=0.75)
        if close:
            raise SpecError(self.file, self._name(close[0]), f"unknown key (did you mean "
                            f"`{key}`?)", "fix its spelling (unknown keys are not ignored)")

    def num(self, key: str, default: Any = ..., positive: bool = True) -> Any:
        v = self.get(key, (int, float), default)
        if v is not None and v is not default and positive and v <= 0:
            raise SpecError(self.file, self._name(key), f"must be > 0, got {v}", None)
        return None if v is None else float(v)

    def table(self, key: str, required: bool = False) -> Fields | None:
        self.used.add(key)
        if key not in self.t:
            if required:
                raise SpecError(self.file, self._name(key), "missing required table",
                                f"add a [{self._name(key)}] table")
            return None
        return Fields(self.t[key], self.file, self._name(key))

    def keys(self) -> list[str]:
        return list(self.t)

    def done(self) -> None:
        extra = [k for k in self.t if k not in self.used]
        if extra:
            raise SpecError(self.file, self._name(extra[0]), "unknown key",
                            "remove it or fix its spelling (unknown keys are not ignored)")
