"""Root typer app; one module per command group."""

from __future__ import annotations

import typer

from perfscope.cli.analyze import analyze_cmd
from perfscope.cli.predict import predict_cmd
from perfscope.cli.profile import profile_cmd
from perfscope.cli.recommend import recommend_cmd
from perfscope.cli.roofline import roofline_cmd
from perfscope.cli.specs import hw_app, models_app

app = typer.Typer(
    name="perfscope",
    help="Roofline performance analysis and profiling for transformer LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from perfscope import __version__

        print(f"perfscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version,
                                       is_eager=True, help="Print the version and exit.")
          ) -> None:
    """Roofline performance analysis and profiling for transformer LLM inference."""


app.command("profile")(profile_cmd)
app.command("analyze")(analyze_cmd)
app.command("predict")(predict_cmd)
app.command("recommend")(recommend_cmd)
app.add_typer(hw_app, name="hw")
app.add_typer(models_app, name="models")
app.command("roofline")(roofline_cmd)

from perfscope.cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

from perfscope.cli.dashboard import dashboard_cmd  # noqa: E402
from perfscope.cli.regress import regress_app  # noqa: E402

app.add_typer(regress_app, name="regress")
app.command("dashboard")(dashboard_cmd)
