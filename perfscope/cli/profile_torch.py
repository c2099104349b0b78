"""Placeholder: this branch of perfscope profile is being built (replace this module)."""

from __future__ import annotations

from perfscope.cli.profile import ProfileArgs
from perfscope.errors import InputError


def run(args: ProfileArgs) -> None:
    raise InputError("this part of perfscope profile is not built yet")
