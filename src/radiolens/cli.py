"""The ``radiolens`` command. Thin: each ``radiolens._cli.<package>`` module holds the commands that drive
``radiolens.<package>`` as plain functions and adds them in its ``register(app)``, in layer order."""

from __future__ import annotations

import sys

import typer

from radiolens import __version__, progress
from radiolens._cli import data as _data
from radiolens._cli import evaluate as _evaluate
from radiolens._cli import explain as _explain
from radiolens._cli import gateway as _gateway
from radiolens._cli import io as _io
from radiolens._cli import models as _models
from radiolens._cli import monitor as _monitor
from radiolens._cli import predict as _predict
from radiolens._cli import serve as _serve
from radiolens._cli import train as _train
from radiolens._cli.common import tidy_typer_help

tidy_typer_help()

app = typer.Typer(
    name="radiolens",
    help="Chest X-ray AI from DICOM to a validated, explainable, monitored prediction. "
    "Advisory only: decision support for qualified readers, never a diagnosis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # shell completion (bash, zsh, fish, PowerShell) via --install-completion / --show-completion, and -h as
    # --help on every command (Click passes help_option_names down to every subcommand's context)
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radiolens {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
         show_progress: bool | None = typer.Option(
             None, "--progress/--no-progress",
             help="Progress bars with rate and ETA on stderr for long steps (default: when stderr is a terminal)."),
         ) -> None:
    """radiolens command-line interface."""
    progress.enable(sys.stderr.isatty() if show_progress is None else show_progress)


for _module in (_io, _data, _models, _train, _evaluate, _explain, _monitor, _predict, _serve, _gateway):
    _module.register(app)

if __name__ == "__main__":
    app()
