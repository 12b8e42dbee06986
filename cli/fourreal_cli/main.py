"""The ``fourreal`` command: run, validate, plugins (and the commands later stages add).

User mistakes end with one line on stderr (``error: FILE: yaml.path: ...``) and exit
code 2; ``--debug`` shows the traceback instead. Heavy modules (torch, plugin
implementations) are imported inside commands, so ``plugins`` and ``validate`` are fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fourreal_core import __version__
from fourreal_core.errors import FourRealError

app = typer.Typer(
    name="fourreal",
    help="Text-to-4D and video-to-4D scene generation with deformable 3D Gaussian splats (4Real).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)

DEBUG_HELP = "Show Python tracebacks instead of one-line errors."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fourreal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """fourreal: prompt or videos -> dynamic 3D scene you can watch from any camera at any time."""


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML (e.g. recipes/demo.yaml), or a run's resolved recipe.yaml."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: a.b.c=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps (default: the recipe's)."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Run a recipe; rerunning the same command resumes an interrupted run."""
    from fourreal_core.recipe import DEVICES, load_recipe
    from fourreal_core.registry import get_registry
    from fourreal_core.run import execute

    if device is not None and device not in DEVICES:
        raise FourRealError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    registry = get_registry()
    rec = load_recipe(recipe, set_, registry)
    out = out or Path("runs") / rec.name
    console.print(f"[bold]fourreal[/bold] run [green]{rec.name}[/green] -> {out}")
    path = execute(rec, out, registry, device=device, console=console)
    console.print(f"[bold green]done[/bold green]: outputs in {path}/stages")


@app.command()
def validate(
    recipes: List[Path] = typer.Argument(..., help="Recipe YAML files to check."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: a.b.c=value (repeatable)."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Check recipes (names, keys, types, input files) without running anything heavy."""
    from fourreal_core.recipe import load_recipe
    from fourreal_core.registry import get_registry

    registry = get_registry()
    for path in recipes:
        rec = load_recipe(path, set_, registry)
        chain = " -> ".join(s.label for s in rec.stages)
        console.print(f"[green]ok[/green] {escape(str(path))}: {escape(rec.name)} ({escape(chain)})")


@app.command()
def plugins(debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP)) -> None:
    """List every registered plugin: kind, name, distribution, description."""
    from rich.table import Table

    from fourreal_core.registry import get_registry

    registry = get_registry()
    table = Table(title="fourreal plugins")
    for col in ("kind", "name", "distribution", "description"):
        table.add_column(col)
    for e in registry.entries():
        table.add_row(e.kind, e.name, escape(e.distribution), escape(e.description))
    console.print(table)


def _install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM stop a run the same way (finished work is kept), even when the
    process was started with SIGINT ignored (e.g. as a background job of a script)."""
    import signal

    def _term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry: one-line errors, exit 2, no traceback unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _install_interrupt_handlers()
    try:
        # non-standalone typer returns an exit code instead of raising (Ctrl-C -> 130)
        code = app(args=args, standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except FourRealError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print(
            "interrupted: finished stages and checkpoints are kept; rerun the same command to resume",
            soft_wrap=True,
        )
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors and bugs
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
