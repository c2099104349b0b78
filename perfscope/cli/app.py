"""Root typer app; one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="perfscope",
    help="Roofline performance analysis and profiling for transformer LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
