"""The plugin registry: pluggy hooks ``fourreal_register(registry)`` (components) and
``fourreal_register_commands(app)`` (CLI commands).

A plugin is a module with::

    from fourreal_core import hookimpl

    @hookimpl
    def fourreal_register(registry):
        registry.add("deformer", "mine", "my_package.mine:MineDeformer", config=MineConfig,
                     description="What it does, in one line.")

listed under the entry-point group ``fourreal`` of its distribution. Built-in plugins
go through the same entry points. The component is given as a lazy target
``"module:attribute"`` (imported when a recipe first builds it, so registering stays cheap
and torch-free) or as any callable; either receives a validated instance of ``MineConfig``
(a dataclass) and returns the component. ``config`` may be a lazy target too
(``config="my_package.mine:MineConfig"``), imported when a recipe first uses the entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterable, Optional

import pluggy

from .errors import PluginError
from .interfaces import KINDS

PROJECT = "fourreal"
ENTRY_POINT_GROUP = "fourreal"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class _Spec:
    @hookspec
    def fourreal_register(self, registry: "Registry") -> None:
        """Add components with ``registry.add(kind, name, target, config=..., description=...)``."""

    @hookspec
    def fourreal_register_commands(self, app: Any) -> None:
        """Add commands to the ``fourreal`` CLI's typer ``app`` (``@app.command()``); called
        once when the CLI starts, after the built-in commands."""


_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class LazyTarget:
    """A component given as ``"package.module:Attribute"``: imported on the first build, then
    called with the validated config like any factory."""

    def __init__(self, target: str, where: str) -> None:
        if not _TARGET.match(target):
            raise PluginError(f"{where}: target {target!r} is not 'package.module:Attribute'")
        self.target, self.where = target, where

    def resolve(self) -> Callable[[Any], Any]:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise PluginError(f"{self.where}: target {self.target!r}: module {module!r} has no {attr!r}") from None
        return obj

    def __call__(self, config: Any) -> Any:
        return self.resolve()(config)

    def __repr__(self) -> str:
        return f"LazyTarget({self.target!r})"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[[Any], Any]
    config_target: "type | LazyTarget"  # the config dataclass, or a lazy target for it
    description: str
    source: str  # "distribution:module" that registered it

    @property
    def config(self) -> type:
        """The config dataclass; a lazy target is imported (and checked) on first access."""
        if not isinstance(self.config_target, LazyTarget):
            return self.config_target
        cls = self.config_target.resolve()
        _check_config(cls, self.source, self.kind, self.name)
        return cls

    @property
    def distribution(self) -> str:
        return self.source.split(":", 1)[0]


def _check_config(config: Any, source: str, kind: str, name: str) -> None:
    if not dataclasses.is_dataclass(config):
        raise PluginError(f"{source}: config for {kind} {name!r} must be a dataclass")


@dataclass
class _EmptyConfig:
    pass


def _norm(dist: str) -> str:
    """Distribution names compare as pip does (PEP 503: case, '-', '_' and '.' alike)."""
    import re

    return re.sub(r"[-_.]+", "-", dist).lower()


class Registry:
    """Maps (kind, name) to a factory and its config dataclass."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._current_source = "<direct>"
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(_Spec)

    # -- registration -------------------------------------------------------------------
    def add(
        self,
        kind: str,
        name: str,
        factory: "Callable[[Any], Any] | str",
        config: "type | str | None" = None,
        description: str = "",
    ) -> None:
        """Register ``(kind, name)``: ``factory`` is a lazy target ``"module:Attribute"`` or a
        callable, called with a validated ``config`` instance to build the component.
        ``config`` is the dataclass or a lazy target for it, imported on first use."""
        if kind not in KINDS:
            raise PluginError(
                f"{self._current_source}: unknown plugin kind {kind!r}"
                + _suggest(kind, KINDS)
                + f" (kinds: {', '.join(KINDS)})"
            )
        if isinstance(config, str):
            config = LazyTarget(config, f"{self._current_source}: config for {kind} {name!r}")
        elif config is not None:
            _check_config(config, self._current_source, kind, name)
        if isinstance(factory, str):
            factory = LazyTarget(factory, f"{self._current_source}: {kind} {name!r}")
        elif not callable(factory):
            raise PluginError(f"{self._current_source}: {kind} {name!r}: the target must be 'module:Attribute' "
                              f"or a callable, got {type(factory).__name__}")
        key = (kind, name)
        if key in self._entries:
            raise PluginError(
                f"duplicate {kind} {name!r}: registered by {self._entries[key].source} "
                f"and by {self._current_source}"
            )
        self._entries[key] = Entry(
            kind, name, factory, config or _EmptyConfig, description.strip(), self._current_source
        )

    def register_module(self, module: Any, source: Optional[str] = None) -> None:
        """Register a plugin module (or object) that implements ``fourreal_register``."""
        source = source or f"<local>:{getattr(module, '__name__', repr(module))}"
        self._register(module, source)

    def _register(self, module: Any, source: str) -> None:
        """Add ``module`` to pluggy and call its ``fourreal_register`` through the hook (only
        its own implementation: the others ran when they were registered)."""
        try:
            self.pm.register(module, name=source)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{source}: {exc}") from None
        impls = [i for i in self.pm.hook.fourreal_register.get_hookimpls() if i.plugin is module]
        if not impls and not any(i.plugin is module for i in self.pm.hook.fourreal_register_commands.get_hookimpls()):
            self.pm.unregister(name=source)
            hint = (" (it has one without @hookimpl: decorate it with fourreal_core.hookimpl)"
                    if callable(getattr(module, "fourreal_register", None)) else "")
            raise PluginError(f"{source}: plugin module has no fourreal_register(registry){hint}")
        others = [p for p in self.pm.get_plugins() if p is not module]
        prev, self._current_source = self._current_source, source
        try:
            self.pm.subset_hook_caller("fourreal_register", remove_plugins=others)(registry=self)
        finally:
            self._current_source = prev

    def register_commands(self, app: Any) -> None:
        """Let every plugin add its CLI commands (``fourreal_register_commands(app)``)."""
        self.pm.hook.fourreal_register_commands(app=app)

    def unregister_source(self, source: str) -> None:
        """Drop everything a source registered (tests use this in fixtures)."""
        for key in [k for k, e in self._entries.items() if e.source == source]:
            del self._entries[key]
        if self.pm.has_plugin(source):
            self.pm.unregister(name=source)

    def load_entry_points(self, only: Optional[Iterable[str]] = None) -> None:
        """Load plugins from the ``fourreal`` entry-point group.

        ``only``: an allowlist (defaults to the ``FOURREAL_PLUGINS`` env var, a comma list;
        empty or unset loads all). Each item is an entry-point name (``stages``), or a
        distribution and entry-point name (``fourreal:stages``), or a whole distribution
        (``my-plugins:*``). Naming the distribution is what keeps another installed package
        that declares an entry point of the same name from loading.
        """
        if only is None:
            env = os.environ.get("FOURREAL_PLUGINS", "").strip()
            only = [s.strip() for s in env.split(",") if s.strip()] if env else None
        wanted = [w for w in only] if only is not None else None
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)

        def dist_of(ep) -> str:
            return ep.dist.name if ep.dist is not None else "?"

        def matches(item: str, ep) -> bool:
            if ":" in item:
                dist, name = item.split(":", 1)
                return _norm(dist) == _norm(dist_of(ep)) and name in ("*", ep.name)
            return item == ep.name

        if wanted is not None:
            missing = [w for w in wanted if not any(matches(w, ep) for ep in eps)]
            if missing:
                known = sorted({f"{dist_of(e)}:{e.name}" for e in eps})
                raise PluginError(
                    f"FOURREAL_PLUGINS names unknown entry point(s) {', '.join(missing)}"
                    f" (installed: {', '.join(known) or 'none'})"
                )
        seen: set[str] = set()
        for ep in eps:
            if wanted is not None and not any(matches(w, ep) for w in wanted):
                continue
            dist = dist_of(ep)
            source = f"{dist}:{ep.value}"
            if source in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(source)
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must say who it is
                raise PluginError(f"plugin {ep.name!r} ({source}) failed to load: {exc}") from exc
            self._register(module, source)

    def load_modules_from_env(self) -> None:
        """Register plugin modules named in ``FOURREAL_PLUGIN_MODULES`` (comma list of
        importable module names) -- for developing a plugin before packaging it."""
        import importlib

        for modname in filter(None, (m.strip() for m in os.environ.get("FOURREAL_PLUGIN_MODULES", "").split(","))):
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                raise PluginError(f"FOURREAL_PLUGIN_MODULES: cannot import {modname!r}: {exc}") from exc
            self.register_module(module, source=f"<env>:{modname}")

    # -- lookup -------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            raise PluginError(f"unknown {kind} {name!r}" + self.suggest(kind, name)) from None

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self._entries if k == kind)

    def suggest(self, kind: str, name: str) -> str:
        return _suggest(name, self.names(kind), fallback_list=True)

    def entries(self) -> list[Entry]:
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(self._entries.values(), key=lambda e: (order[e.kind], e.name))

    def create(self, kind: str, name: str, config: Any = None) -> Any:
        entry = self.get(kind, name)
        if config is None:
            config = entry.config()
        return entry.factory(config)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries


def _suggest(word: str, choices: Iterable[str], fallback_list: bool = False) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if fallback_list and choices:
        return "; valid: " + ", ".join(choices)
    if fallback_list:
        return "; none is registered"
    return ""


_default: Optional[Registry] = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    if _default is None or reload:
        reg = Registry()
        reg.load_entry_points()
        reg.load_modules_from_env()
        _default = reg
    return _default
