"""The perfscope command line. Thin: parse, call the library, render.

One boundary maps every PerfscopeError and usage error to a single line on stderr and a
non-zero exit; PERFSCOPE_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    import typer

    from perfscope.errors import PerfscopeError

    debug = os.environ.get("PERFSCOPE_DEBUG") == "1"
    try:
        from perfscope.cli.app import app

        rv = app(args=argv, prog_name="perfscope", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except PerfscopeError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except typer.Exit as e:
        sys.exit(getattr(e, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:
        # click's (or typer's vendored click's) usage errors: duck-typed, one line
        if debug or not hasattr(e, "format_message"):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            ctx = getattr(e, "ctx", None)
            print(ctx.get_help() if ctx else e.format_message())
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{e.format_message()}{hint}", getattr(e, "exit_code", 2) or 2)


def _fail(msg: str, code: int) -> None:
    msg = " ".join(msg.split())  # one line, always
    print(f"perfscope: error: {msg}", file=sys.stderr)
    sys.exit(code)
