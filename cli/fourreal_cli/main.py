"""The ``fourreal`` command: run, validate, plugins, export, eval, render -- and the commands
plugins add through the ``fourreal_register_commands(app)`` hook (``view``, ``train-prior``,
``batch``: docs/plugins.md, "Commands").

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
from fourreal_core.errors import FourRealError, environment_error

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
    _print_outputs(path / "stages")
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


def _adhoc(run_dir: Path, stage: str, params: dict, out_name: str, device: Optional[str]) -> Path:
    from fourreal_core.registry import get_registry
    from fourreal_cli.adhoc import execute_adhoc

    params = {k: v for k, v in params.items() if v is not None}
    return execute_adhoc(run_dir, stage, params, out_name, get_registry(), device=device, console=console)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder whose canonical or motion stage has finished."),
    out: str = typer.Option("export", "--out", help="Sub-folder of the run to write into."),
    orbit_frames: Optional[int] = typer.Option(None, help="Frames of the orbit and spiral videos."),
    orbit_arc_deg: Optional[float] = typer.Option(None, help="Arc of the bullet-time orbit."),
    num_times: Optional[int] = typer.Option(None, help="PLYs / fixed-camera frames (0: the reference times)."),
    width: Optional[int] = typer.Option(None, "--width", help="Width of the videos (default: the input's)."),
    height: Optional[int] = typer.Option(None, "--height", help="Height of the videos (default: the input's)."),
    web: Optional[Path] = typer.Option(
        None, "--web", help="Write only a static web page (OUT/index.html, opens from file://) into this folder."),
    web_times: int = typer.Option(0, "--web-times", help="Time steps of the page (0: the reference frames' times)."),
    web_min_opacity: float = typer.Option(0.0, "--web-min-opacity", help="Drop Gaussians less opaque than this."),
    web_max_gaussians: int = typer.Option(0, "--web-max-gaussians", help="Keep the N most opaque Gaussians (0: all)."),
    web_sh_degree: Optional[int] = typer.Option(
        None, "--web-sh-degree", help="SH bands baked into the colour (default: the scene's degree)."),
    web_position_bits: int = typer.Option(
        0, "--web-position-bits", help="Round moving centres to 2^bits steps over the scene's box (0: off)."),
    web_fps: float = typer.Option(8.0, "--web-fps", help="Time steps per second at 1x."),
    splatv: bool = typer.Option(
        False, "--splatv", help="With --web: also OUT/scene.splatv (trajectories fitted; the fit error is printed)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """PLY per time step, canonical PLY + deformer + manifest, videos and an image grid; or, with
    --web OUT, only a static page that plays the 4D scene in a browser (docs/viewing.md)."""
    if web is not None:
        _export_web(run_dir, web, web_times=web_times, web_min_opacity=web_min_opacity,
                    web_max_gaussians=web_max_gaussians, web_sh_degree=web_sh_degree,
                    web_position_bits=web_position_bits, web_fps=web_fps, splatv=splatv)
        return
    changed = [name for name, value, default in (
        ("--web-times", web_times, 0), ("--web-min-opacity", web_min_opacity, 0.0),
        ("--web-max-gaussians", web_max_gaussians, 0), ("--web-sh-degree", web_sh_degree, None),
        ("--web-position-bits", web_position_bits, 0), ("--web-fps", web_fps, 8.0), ("--splatv", splatv, False))
        if value != default]
    if changed:
        raise FourRealError(f"{changed[0]}: only with --web OUT")
    path = _adhoc(run_dir, "export", {"orbit_frames": orbit_frames, "orbit_arc_deg": orbit_arc_deg,
                                      "num_times": num_times, "width": width, "height": height}, out, device)
    _print_outputs(path)


def _export_web(run_dir: Path, out: Path, **o) -> None:
    """``fourreal export RUN --web OUT``: the scene on the CPU, one self-contained page."""
    import math
    import time

    from fourreal_core.errors import InputError
    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D, find_scene

    try:
        from fourreal_viewer.web import WebOptions, build_web, check_options, prepare_out
    except ImportError as exc:
        raise FourRealError(f"--web needs the view extra (pip install -e '.[view]'): {exc}") from None
    opts = WebOptions(num_times=o["web_times"], min_opacity=o["web_min_opacity"], sh_degree=o["web_sh_degree"],
                      position_bits=o["web_position_bits"], fps=o["web_fps"], max_gaussians=o["web_max_gaussians"],
                      splatv=o["splatv"])
    check_options(opts)
    prepare_out(out)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such run folder or scene4d.json")
    start = time.perf_counter()
    scene = Scene4D.load(find_scene(run_dir), get_registry(), "cpu")
    r = build_web(scene, out, opts)
    console.print(escape(f"wrote {out / 'index.html'} ({r.bytes / 1e6:.1f} MB, {r.gaussians_kept:,} Gaussians: "
                         f"{r.static:,} static, {r.moving:,} moving x {len(r.times)} times; "
                         f"{time.perf_counter() - start:.1f} s)"), soft_wrap=True, highlight=False)
    for note in r.notes[1:]:
        console.print(escape(f"  {note}"), soft_wrap=True, highlight=False)
    if r.splatv:
        f = r.splatv
        console.print(escape(
            f"wrote {out / f['file']} ({f['bytes'] / 1e6:.1f} MB): fit error over {len(f['times_fitted'])} times: "
            f"centres RMS {f['position_rms_error']:.4g} ({100 * f['position_rms_error_fraction_of_scene']:.2f}% of the "
            f"scene), max {f['position_max_error']:.4g}; rotations mean {f['rotation_mean_error_deg']:.2f} deg, max "
            f"{f['rotation_max_error_deg']:.2f} deg; scale changes dropped (up to x{math.exp(f['scale_change_dropped_max_log']):.2f})"),
            soft_wrap=True, highlight=False)


def _find_against(run_dir: Path, against: Path) -> Path:
    """``--against`` as given (relative to the current folder), else, for a relative path, the
    same path inside the run: ``RUN/against``, then the newest finished stage's
    ``RUN/stages/NN_name/against`` -- so ``--against test/transforms.json`` finds the held-out
    views an earlier stage wrote (the synthetic scene's, a poses stage's hold-out)."""
    if against.exists():
        return against
    looked = ["."]
    if not against.is_absolute():
        from fourreal_core.run import RunDir

        finished = list(RunDir(run_dir).finished_stage_dirs(check=False).values())[::-1]
        for base in [run_dir, *finished]:
            if (base / against).is_file():
                return base / against
        looked += [str(run_dir), f"{run_dir / 'stages'}/*"]
    raise FourRealError(f"--against {against}: file not found (looked in {', '.join(looked)})")


@app.command(name="eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder whose canonical or motion stage has finished."),
    against: Path = typer.Option(
        ..., "--against", help="transforms.json of held-out views (with per-frame time); a relative path not found "
        "here is looked up in the run folder, then in its stages (newest first)."),
    out: str = typer.Option("eval", "--out", help="Sub-folder of the run to write into."),
    white_background: Optional[bool] = typer.Option(
        None, "--white-background/--black-background", help="Composite RGBA targets on white (D-NeRF) or black."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="Also compute LPIPS when the package is installed."),
    height: Optional[int] = typer.Option(None, "--height", help="Score at this height (default: the training size)."),
    width: Optional[int] = typer.Option(None, "--width", help="Score at this width (default: the training size)."),
    native_resolution: bool = typer.Option(
        False, "--native-resolution", help="Score at the test images' own size instead of the training size."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Render each held-out camera at its time; per-frame and mean PSNR, SSIM, LPIPS to JSON.

    Scored at the size the scene was trained at unless --height/--width or --native-resolution."""
    import json

    from rich.table import Table

    found = _find_against(run_dir, against)
    if found != against:
        console.print(f"eval: --against {against}: using the run's {found}", soft_wrap=True, highlight=False)
    path = _adhoc(run_dir, "eval", {"against": str(found.resolve()), "white_background": white_background,
                                    "lpips": lpips, "height": height, "width": width,
                                    "native_resolution": native_resolution}, out, device)
    res = json.loads((path / "eval.json").read_text())
    r = res.get("resolution", {})
    table = Table(title=f"eval vs {against} at {r.get('width')}x{r.get('height')} ({r.get('from')} size)")
    cols = ["frame", "time", *[k for k in ("psnr", "ssim", "lpips", "dynamic_psnr", "dynamic_ssim")
                               if k in res["mean"]]]
    for col in cols:
        table.add_column(col)
    for row in res["per_frame"]:
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in cols])
    table.add_row("[bold]mean[/bold]", "", *[f"{res['mean'][c]:.4f}" for c in cols[2:]])
    if "dynamic_psnr" in res["mean"]:
        console.print(f"dynamic region ({res.get('dynamic_mask', 'frames')}): "
                      f"{100 * res['mean'].get('dynamic_fraction', 0):.1f}% of the pixels")
    console.print(table)
    for note in res.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(f"wrote {path / 'eval.json'}")


@app.command()
def render(
    run_dir: Path = typer.Argument(..., help="A run folder whose canonical or motion stage has finished."),
    time: Optional[float] = typer.Option(None, "--time", "-t", help="Time in [0,1] (default: the canonical time)."),
    cameras: Optional[Path] = typer.Option(None, "--cameras", help="transforms.json of cameras to render."),
    orbit_deg: float = typer.Option(0.0, "--orbit-deg", help="Turn the reference camera about the scene."),
    out: str = typer.Option("render", "--out", help="Sub-folder of the run to write into."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Render the 4D scene at any camera and time to PNGs."""
    if cameras is not None and not cameras.exists():
        raise FourRealError(f"--cameras {cameras}: file not found")
    path = _adhoc(run_dir, "render", {"time": time, "cameras": str(cameras.resolve()) if cameras else None,
                                      "orbit_deg": orbit_deg}, out, device)
    _print_outputs(path)


def _print_outputs(folder: Path) -> None:
    """Where the files people look at are, and the scores."""
    import json

    from rich.table import Table

    folder = Path(folder)
    table = Table(title=f"outputs in {folder}", show_header=True)
    table.add_column("what")
    table.add_column("where")
    for pattern, what in (("*.mp4", "video"), ("*.png", "image"), ("*.ply", "splats (PLY)")):
        files = sorted(folder.rglob(pattern))
        if len(files) > 4:
            table.add_row(what, f"{len(files)} files, e.g. {escape(str(files[0]))}")
        else:
            for f in files:
                table.add_row(what, escape(str(f)))
    for f in sorted(folder.rglob("*.json")):
        if f.name in ("metrics.json", "eval.json"):
            data = json.loads(f.read_text())
            scores = data.get("mean", data)
            text = ", ".join(f"{k}={v:.3f}" for k, v in scores.items() if isinstance(v, float))
            table.add_row("scores", f"{escape(str(f))}: {escape(text)}")
    console.print(table)


def _install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM stop a run the same way (finished work is kept), even when the
    process was started with SIGINT ignored (e.g. as a background job of a script)."""
    import signal

    def _term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)


def _say_error(line: str, label: str = "error") -> None:
    """Print ``error: line`` on stderr; plain text when rich cannot (out of memory or address
    space, a closed stream)."""
    try:
        err_console.print(f"[bold red]{label}:[/bold red] {escape(line)}", highlight=False, soft_wrap=True)
    except Exception:  # noqa: BLE001 - the line must come out even when rich cannot
        try:
            sys.stderr.write(f"{label}: {line}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass


def _exit_after_error(code: int) -> None:
    """Exit with ``code`` after the one error line: objects freed at shutdown (a video writer
    whose ffmpeg died on a full disk, an open file on a disk over its limit) may raise from
    their destructors; Python would print each as a traceback after the line."""
    sys.unraisablehook = lambda unraisable: None
    sys.exit(code)


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    """The commands plugins add (``fourreal_register_commands``), once per process."""
    global _plugin_commands_added
    if not _plugin_commands_added:
        from fourreal_core.registry import get_registry

        _plugin_commands_added = True
        get_registry().register_commands(app)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry: one-line errors, exit 2, no traceback unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _install_interrupt_handlers()
    try:
        _add_plugin_commands()
        # non-standalone typer returns an exit code instead of raising (Ctrl-C -> 130)
        code = app(args=args, standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except FourRealError as exc:
        if debug:
            raise
        exc.__traceback__ = None  # frees what the failed command held (tensors) before printing
        _say_error(str(exc))
        _exit_after_error(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print(
            "interrupted: finished stages and checkpoints are kept; rerun the same command to resume",
            soft_wrap=True,
        )
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors (typer may vendor its own click) and bugs
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        exc.__traceback__ = None
        line = environment_error(exc)
        if line is not None:
            _say_error(line)
            _exit_after_error(2)
        _say_error(f"{type(exc).__name__}: {str(exc)} (rerun with --debug for the traceback)", "internal error")
        _exit_after_error(1)


if __name__ == "__main__":
    main()
