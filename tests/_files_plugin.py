"""Stages that pass one file, ``x.txt``, for tests/test_stage_files.py (registered by the tests,
never installed): ``writer`` declares writing it, ``stray`` writes it without declaring
anything (as a third-party stage may), ``reader`` copies what ``ctx.find_output`` finds."""

from __future__ import annotations

from dataclasses import dataclass

from fourreal_core import hookimpl
from fourreal_core.interfaces import Stage


@dataclass
class FileConfig:
    content: str = "x"
    forget: bool = False  # writer: do not write the file it declares


class Writer(Stage):
    writes = ("x.txt",)
    may_write = ("extra/*.txt",)

    def __init__(self, cfg: FileConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        if not self.cfg.forget:
            (ctx.out_dir / "x.txt").write_text(self.cfg.content)


class Stray:  # no declarations, not even a Stage subclass
    def __init__(self, cfg: FileConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        (ctx.out_dir / "x.txt").write_text(self.cfg.content)


class Reader(Stage):
    reads = ("x.txt",)
    writes = ("seen.txt",)

    def __init__(self, cfg: FileConfig) -> None:
        self.cfg = cfg

    def run(self, ctx) -> None:
        found = ctx.find_output("x.txt")
        (ctx.out_dir / "seen.txt").write_text(found.read_text() if found else "<none>")


@hookimpl
def fourreal_register(registry):
    for name, cls in (("writer", Writer), ("stray", Stray), ("reader", Reader)):
        registry.add("stage", name, cls, config=FileConfig, description=f"test stage: {name} x.txt")
