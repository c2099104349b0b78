"""The perfscope command line. Thin: parse, call the library, render."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from perfscope.errors import PerfscopeError

    try:
        from perfscope.cli.app import app

        app(standalone_mode=True)
    except PerfscopeError as e:
        if os.environ.get("PERFSCOPE_DEBUG") == "1":
            raise
        print(f"perfscope: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
