"""Typed errors. The CLI turns any PerfscopeError into one line and a non-zero exit."""

from __future__ import annotations


class PerfscopeError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""

    exit_code = 2


class SpecError(PerfscopeError):
    """A hardware, interconnect, model or scenario file is malformed or incomplete."""

    def __init__(self, file: str, field: str | None, problem: str, fix: str | None = None):
        where = f"{file}: {field}" if field else file
        msg = f"{where}: {problem}"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)
        self.file, self.field, self.problem, self.fix = file, field, problem, fix


class InputError(PerfscopeError):
    """A flag or API argument has a bad value."""


class UnsupportedDtypeError(InputError):
    """The device cannot run this dtype at speed (fp8 on A100, bf16 on V100, ...)."""


class NotFoundError(InputError):
    """A named model, device or link is not built in and is not a readable file."""


class MeasureError(PerfscopeError):
    """A measurement could not be taken (no torch, out of memory, unknown op...)."""
