"""Registers the ``fourreal view`` command (docs/viewing.md) through the
``fourreal_register_commands`` hook. Light to import: the viewer itself (viser, torch) is
imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fourreal_core import hookimpl

DEBUG_HELP = "Show Python tracebacks instead of one-line errors."


def view(
    run_or_scene: Path = typer.Argument(..., help="A run folder (its newest 4D scene) or a scene4d.json."),
    port: int = typer.Option(8080, "--port", help="TCP port to serve on (a busy port is an error)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    height: Optional[int] = typer.Option(None, "--height", help="Rows of the still frame (default: the training size)."),
    interactive_height: int = typer.Option(144, "--interactive-height", help="Rows while the camera moves or time plays."),
    fps: float = typer.Option(8.0, "--fps", help="1x speed plays the reference frames at this rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Look at the 4D scene in the browser: time slider, play, canonical toggle, cameras (docs/viewing.md)."""
    from rich.console import Console
    from rich.markup import escape

    from fourreal_core.errors import FourRealError

    try:
        from fourreal_viewer.server import ViewOptions, view as serve
    except ImportError as exc:
        raise FourRealError(f"fourreal view needs the view extra (pip install -e '.[view]'): {exc}") from None
    console = Console(stderr=False)
    serve(run_or_scene, ViewOptions(host=host, port=port, height=height, interactive_height=interactive_height,
                                    fps=fps), device=device, say=lambda line: console.print(escape(line), soft_wrap=True,
                                                                                             highlight=False))


@hookimpl
def fourreal_register_commands(app):
    app.command()(view)
