"""YAML recipes: load, override, validate against plugin configs, and dump resolved.

A recipe is::

    name: demo
    seed: 0
    device: auto                 # auto | cpu | cuda | mps
    iterations_scale: 1.0        # multiplies every stage's iteration counts
    rasterizer: {name: auto, params: {}}
    stages:
      - name: synthetic          # a registered stage plugin
        params: {...}            # validated against its config dataclass
      - name: canonical
        params:
          deformer: {name: per_frame, params: {...}}   # nested components work the same

Every error names the file and the YAML path (``demo.yaml: stages[1].params.lr: ...``)
and suggests the closest valid name. ``--set a.b.c=value`` overrides are typed by the
field they land on; list items may be addressed by index or by their ``name``
(``--set stages.canonical.params.iterations=100``).
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .config import (Component, ComponentSpec, ConfigValueError, Ramp, _ComponentMarker, _InputPathMarker,
                     component_default)
from .errors import PluginError, RecipeError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Recipe:
    """The top level of a recipe file."""

    stages: list[Component("stage")]  # type: ignore[valid-type]
    name: str = "fourreal-run"
    description: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    iterations_scale: float = 1.0
    rasterizer: Component("rasterizer") = component_default("rasterizer", "auto")  # type: ignore[valid-type]

    # set by the loader, not part of the YAML
    path: Optional[Path] = field(default=None, repr=False, compare=False)
    #: dotted paths the recipe file or a --set wrote (list items by id/name), so a run folder
    #: can tell a parameter it lacks that the user set from one a newer version defaulted
    written: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bool) and isinstance(self.seed, int) and not 0 <= self.seed < 2**63:
            # torch.manual_seed takes 64 bits; stage k is seeded with seed + k
            raise ConfigValueError("seed", f"must be an integer in [0, 2^63), got {self.seed}")

    @property
    def recipe_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


_NOT_YAML = {"path", "written"}


class _Override:
    """A ``--set`` value kept as text until the target field's type is known."""

    def __init__(self, text: str, key: str) -> None:
        self.text = text
        self.key = key

    def parsed(self) -> Any:
        try:
            return yaml.load(self.text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader
        except StrictYAMLError as exc:
            raise RecipeError(f"--set {self.key}: {exc}") from None
        except yaml.YAMLError:
            return self.text


# ---------------------------------------------------------------------------- loading
class StrictYAMLError(Exception):
    """A YAML file :class:`StrictLoader` refuses; ``str()`` starts with ``line N:``."""


#: at most this many values after expanding aliases (a recipe holds hundreds; a
#: "billion laughs" alias bomb expands nine aliases nine times over to 9^9 values)
MAX_YAML_VALUES = 1_000_000


class AliasBombError(StrictYAMLError):
    """Aliases that expand to more than :data:`MAX_YAML_VALUES` values."""


class DuplicateKeyError(StrictYAMLError):
    """A key written twice in one YAML mapping (``str()``: ``line 12: duplicate key 'x' (first
    at line 9)``)."""

    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: duplicate key {_short(key)} (first at line {first})")
        self.key, self.line, self.first = key, line, first


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the
    last one silently). Keys a ``<<`` merge brings in may still be overridden, as YAML says."""

    def construct_document(self, node):  # type: ignore[override]
        """Refuse before constructing when the aliases would expand past :data:`MAX_YAML_VALUES`
        (PyYAML shares an aliased object, but validating, dumping or fingerprinting the recipe
        walks every copy: a 9^9 alias bomb ran for a minute and ended as "out of memory")."""
        if node is not None:
            check_alias_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor says so
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKeyError(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def check_alias_expansion(root: "yaml.Node", limit: int = MAX_YAML_VALUES) -> None:
    """:class:`AliasBombError` naming the line of the largest expansion when the document
    composed as ``root`` would hold more than ``limit`` values once its aliases are expanded.
    Counted over the composed node graph with one entry per distinct node, so the check
    costs time linear in the file, never in the expansion."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1  # a recursive alias (a node inside itself) counts once, never loops
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        sizes[key] = min(total, 1 << 62)
        return sizes[key]

    try:
        total = size(root)
    except RecursionError:
        raise AliasBombError(f"line {root.start_mark.line + 1}: YAML nested too deeply; refusing") from None
    if total <= limit:
        return
    worst, where = root, ""
    if isinstance(root, yaml.MappingNode) and root.value:  # name the top-level key that expands most
        key, worst = max(root.value, key=lambda kv: sizes.get(id(kv[1]), 1))
        where = f" ({key.value})" if isinstance(key, yaml.ScalarNode) else ""
    raise AliasBombError(f"line {worst.start_mark.line + 1}{where}: YAML aliases expand to {total:.3g} values "
                         f"(more than {limit:,}); refusing to expand them (an alias bomb?)")


def load_yaml(path: Path, what: str = "recipe") -> Any:
    """The mapping a YAML file holds (:class:`StrictLoader`); one-line :class:`RecipeError`s
    naming the file (and line) and calling it ``what`` (``recipe``, ``batch spec``)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x}); "
                          f"save the {what} as UTF-8") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader
    except StrictYAMLError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}{line}: YAML syntax error: {problem}") from None
    if data is None:
        raise RecipeError(f"{path}: {what} is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a {what} must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str], file: str) -> None:
    """Apply ``a.b.c=value`` overrides to the raw YAML data in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. seed=3")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"--set {item!r}: empty key")
        node: Any = data
        walked: list[str] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    names = [str(x.get("name")) for x in node if isinstance(x, dict)]
                    raise RecipeError(
                        f"{file}: --set {key}: no item {part!r} in {'.'.join(walked) or 'the list'}"
                        + (f" (items: {', '.join(names)})" if names else "")
                    )
                if last:
                    node[idx] = _Override(text, key)
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = _Override(text, key)
                else:
                    nxt = node.get(part)
                    if nxt is None:
                        nxt = node[part] = {}
                    elif isinstance(nxt, str):  # component shorthand `rasterizer: torch`
                        nxt = node[part] = {"name": nxt}
                    node = nxt
            else:
                raise RecipeError(f"{file}: --set {key}: {'.'.join(walked)} is not a mapping or list")
            walked.append(part)


def _list_index(items: list, part: str) -> Optional[int]:
    if part.lstrip("-").isdigit():
        idx = int(part)
        return idx if -len(items) <= idx < len(items) else None
    for key in ("id", "name"):
        for i, x in enumerate(items):
            if isinstance(x, dict) and x.get(key) == part:
                return i
    return None


# ------------------------------------------------------------------------- validation
class _Validator:
    def __init__(self, registry, file: str, base_dir: Path, check_files: bool) -> None:
        self.registry = registry
        self.file = file
        self.base_dir = base_dir
        self.check_files = check_files

    def fail(self, path: str, msg: str) -> RecipeError:
        return RecipeError(f"{self.file}: {path or '<top>'}: {msg}")

    # entry point
    def dataclass_from(self, cls: type, data: Any, path: str, what: str = "key") -> Any:
        if isinstance(data, _Override):
            data = data.parsed()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.fail(path, f"expected a mapping, got {_tname(data)} {_short(data)}")
        hints = typing.get_type_hints(cls, include_extras=True)
        flds = {f.name: f for f in fields(cls) if f.init and f.name not in _NOT_YAML}
        for key in data:
            if key not in flds:
                sub = _join(path, str(key))
                close = difflib.get_close_matches(str(key), list(flds), n=3, cutoff=0.5)
                hint = (
                    "; did you mean " + " or ".join(repr(c) for c in close) + "?"
                    if close
                    else f" (valid: {', '.join(flds) or 'none'})"
                )
                raise self.fail(sub, f"unknown {what}{hint}")
        kwargs = {}
        for name, f in flds.items():
            sub = _join(path, name)
            if name in data:
                value = data[name]
                if (f.default_factory is not MISSING and isinstance(value, dict)  # type: ignore[misc]
                        and "name" not in value and _contains_component(hints[name])):
                    # `--set x.params.k=v` on a defaulted component keeps its default name/params
                    default = f.default_factory()  # type: ignore[misc]
                    if isinstance(default, dict) and "name" in default:
                        value = {"name": default["name"],
                                 "params": _deep_merge(default.get("params") or {}, value.get("params") or {}),
                                 **{k: v for k, v in value.items() if k not in ("name", "params")}}
                kwargs[name] = self.value(value, hints[name], sub)
            elif f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise self.fail(sub, f"missing required {what}")
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
                # defaults holding components are given as raw YAML: validate them like YAML
                if _contains_component(hints[name]) and not _is_resolved(default):
                    kwargs[name] = self.value(default, hints[name], sub)
            # plain defaults: left to the dataclass
        try:
            return cls(**kwargs)
        except ConfigValueError as exc:  # names the field (or the item) it is about
            raise self.fail(_join(path, exc.path), exc.message) from None
        except (TypeError, ValueError) as exc:
            raise self.fail(path, str(exc)) from None

    def value(self, value: Any, ann: Any, path: str) -> Any:
        origin = typing.get_origin(ann)
        # Annotated[...] markers
        if origin is typing.Annotated:
            base, *meta = typing.get_args(ann)
            for m in meta:
                if isinstance(m, _ComponentMarker):
                    return self.component(value, m.kind, path)
                if isinstance(m, _InputPathMarker):
                    return self.input_path(value, path, m.file)
            return self.value(value, base, path)
        if origin is Union:  # an --set value stays text until the member that takes it is known
            args = typing.get_args(ann)
            raw = value.parsed() if isinstance(value, _Override) else value
            if raw is None and type(None) in args:
                return None
            errors = []
            for a in args:
                if a is type(None):
                    continue
                try:
                    return self.value(value, a, path)
                except RecipeError as exc:
                    errors.append(exc)
            if len(errors) == 1:
                raise errors[0]
            raise self.fail(path, f"expected {_ann_name(ann)}, got {_tname(raw)} {_short(raw)}")
        if isinstance(value, _Override):
            if ann is str:
                return value.text
            value = value.parsed()
        if ann is Any:
            return value
        if origin is Literal:
            choices = typing.get_args(ann)
            if value not in choices:
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(path, f"{_short(value)} is not one of {', '.join(map(str, choices))}{hint}")
            return value
        if origin in (list, tuple):
            args = typing.get_args(ann)
            if not isinstance(value, (list, tuple)):
                raise self.fail(path, f"expected a list, got {_tname(value)} {_short(value)}")
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise self.fail(path, f"expected {len(args)} items, got {len(value)}")
                return tuple(self.value(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            item = args[0] if args else Any
            out = [self.value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(out) if origin is tuple else out
        if origin is dict:
            kt, vt = typing.get_args(ann) or (str, Any)
            if not isinstance(value, dict):
                raise self.fail(path, f"expected a mapping, got {_tname(value)} {_short(value)}")
            return {str(k): self.value(v, vt, _join(path, str(k))) for k, v in value.items()}
        if ann is Ramp:
            try:
                ramp = Ramp(value)
            except ValueError as exc:
                raise self.fail(path, str(exc)) from None
            if not all(math.isfinite(v) for v in (ramp.v0, ramp.v1)):
                raise self.fail(path, f"expected finite values, got {ramp.to_yaml()}")
            if _is_learning_rate(path) and min(ramp.v0, ramp.v1) < 0:
                raise self.fail(path, f"a learning rate must be >= 0, got {ramp.to_yaml()}")
            return ramp
        if is_dataclass(ann):
            return self.dataclass_from(ann, value, path)
        if ann is bool:
            if isinstance(value, bool):
                return value
            raise self.fail(path, f"expected true/false, got {_tname(value)} {_short(value)}")
        if ann is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise self.fail(path, f"expected an integer, got {_tname(value)} {_short(value)}")
        if ann is float:
            number = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
                try:
                    number = float(value)
                except ValueError:
                    pass
            if number is None:
                raise self.fail(path, f"expected a number, got {_tname(value)} {_short(value)}")
            if not math.isfinite(number):
                raise self.fail(path, f"expected a finite number, got {number}")
            if _is_learning_rate(path) and number < 0:
                raise self.fail(path, f"a learning rate must be >= 0, got {number}")
            return number
        if ann is str:
            if isinstance(value, str):
                return value
            raise self.fail(path, f"expected a string, got {_tname(value)} {_short(value)}")
        if ann is Path:
            if isinstance(value, str):
                return Path(value)
            raise self.fail(path, f"expected a path, got {_tname(value)} {_short(value)}")
        if isinstance(ann, type) and isinstance(value, ann):
            return value
        raise self.fail(path, f"expected {_ann_name(ann)}, got {_tname(value)} {_short(value)}")

    def input_path(self, value: Any, path: str, must_be_file: bool = False) -> str:
        base = self.base_dir  # paths written in a recipe are relative to the recipe file ...
        if isinstance(value, _Override):
            value, base = value.text, Path.cwd()  # ... paths given with --set to where you typed them
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a file path, got {_tname(value)} {_short(value)}")
        p = Path(value).expanduser()
        full = p if p.is_absolute() else (base / p)
        if self.check_files:
            if not full.exists():
                raise self.fail(path, f"input not found: {full}")
            if must_be_file and full.is_dir():
                raise self.fail(path, f"input is a folder, expected a file: {full}")
            if full.is_file():
                try:
                    with open(full, "rb") as fh:
                        fh.read(1)
                except OSError as exc:
                    raise self.fail(path, f"input not readable: {full} ({exc.strerror or exc})") from None
        return str(full.resolve()) if full.exists() else str(full)

    def component(self, value: Any, kind: str, path: str) -> ComponentSpec:
        if isinstance(value, _Override):
            text = value.text
            value = value.parsed()
            if isinstance(value, str) or value is None:
                value = {"name": text}
        if isinstance(value, str):  # shorthand: `rasterizer: torch`
            value = {"name": value}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected {{name: ..., params: {{...}}}} for a {kind}, got {_tname(value)}")
        allowed = ["name", "params", "id"] if kind == "stage" else ["name", "params"]
        extra = set(value) - set(allowed)
        if extra:
            key = sorted(map(str, extra))[0]
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f" (a {kind} has only {', '.join(allowed)})"
            raise self.fail(_join(path, key), f"unknown key{hint}")
        sid = value.get("id")
        if isinstance(sid, _Override):
            sid = sid.text
        if sid is not None and not isinstance(sid, str):
            raise self.fail(_join(path, "id"), f"expected a string, got {_tname(sid)}")
        if "name" not in value:
            raise self.fail(_join(path, "name"), f"missing required key (which {kind} to use)")
        name = value["name"]
        if isinstance(name, _Override):
            name = name.text
        if not isinstance(name, str):
            raise self.fail(_join(path, "name"), f"expected a {kind} name, got {_tname(name)}")
        try:
            entry = self.registry.get(kind, name)
        except PluginError:
            raise self.fail(_join(path, "name"), f"unknown {kind} {name!r}" + self.registry.suggest(kind, name)) from None
        params = self.dataclass_from(entry.config, value.get("params"), _join(path, "params"), what="param")
        check = getattr(params, "check_recipe", None)
        if callable(check):  # checks across fields and components (a stage's phases vs its losses)
            try:
                check(self.registry, sid or name)
            except ConfigValueError as exc:
                raise self.fail(_join(_join(path, "params"), exc.path), exc.message) from None
        return ComponentSpec(kind, name, params, path, sid)


def _is_learning_rate(path: str) -> bool:
    """Fields named ``lr``, ``*_lr``, ``lr_*`` or ``*_lr_*`` (``means_lr``, ``lr_final``)."""
    key = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return key == "lr" or key.endswith("_lr") or key.startswith("lr_") or "_lr_" in key


#: Names that become folder names (stage ids and labels, the recipe name): one plain component.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_path_name(value: str, file: str, yaml_path: str) -> None:
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise RecipeError(
            f"{file}: {yaml_path}: {value!r} becomes a folder name: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no '/', '..' or spaces)"
        )


def _marker(ann: Any, cls: type) -> Any:
    if typing.get_origin(ann) is typing.Annotated:
        for m in typing.get_args(ann)[1:]:
            if isinstance(m, cls):
                return m
    return None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _contains_component(ann: Any) -> bool:
    """Whether an annotation has a Component(...) anywhere (list[...], Optional[...])."""
    if _marker(ann, _ComponentMarker):
        return True
    return any(_contains_component(a) for a in typing.get_args(ann) if a is not Ellipsis)


def _is_resolved(value: Any) -> bool:
    if isinstance(value, ComponentSpec):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_resolved(v) for v in value)
    return value is None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tname(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "mapping"}.get(
        type(v), type(v).__name__
    )


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _ann_name(ann: Any) -> str:
    if typing.get_origin(ann) is Union:
        return " or ".join(_ann_name(a) for a in typing.get_args(ann) if a is not type(None))
    return getattr(ann, "__name__", str(ann))


# ----------------------------------------------------------------------------- public
def item_label(item: Any, index: int) -> str:
    """A list item's part of a dotted recipe path: its ``id`` or ``name``, else its index
    (as ``--set`` addresses it)."""
    key = (item.get("id") or item.get("name")) if isinstance(item, dict) else None
    return str(key if key is not None else index)


def written_paths(data: Any, path: str = "") -> list[str]:
    """Every dotted path in raw recipe data, list items by :func:`item_label`, as
    :func:`fourreal_core.run.added_keys` names them."""
    out = [path] if path else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += written_paths(v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += written_paths(v, f"{path}.{item_label(v, i)}")
    return out


def load_recipe(
    path: Path | str,
    overrides: Optional[list[str]] = None,
    registry=None,
    check_files: bool = True,
) -> Recipe:
    """Load, override and validate a recipe. Raises :class:`RecipeError` with one line."""
    from .registry import get_registry

    path = Path(path)
    registry = registry or get_registry()
    data = load_yaml(path)
    apply_overrides(data, list(overrides or []), str(path))
    v = _Validator(registry, str(path), path.resolve().parent, check_files)
    recipe = v.dataclass_from(Recipe, data, "")
    recipe.path = path.resolve()
    recipe.written = frozenset(written_paths(data))
    check_path_name(recipe.name, str(path), "name")
    seen: dict[str, int] = {}
    for i, st in enumerate(recipe.stages):
        check_path_name(st.label, str(path), f"stages[{i}].{'id' if st.id else 'name'}")
        if st.label in seen:
            raise RecipeError(
                f"{path}: stages[{i}]: stage {st.label!r} already runs as stages[{seen[st.label]}]; "
                "give one of them an id: (e.g. id: export_2)"
            )
        seen[st.label] = i
    if not recipe.stages:
        raise RecipeError(f"{path}: stages: a recipe needs at least one stage")
    if recipe.iterations_scale <= 0:
        raise RecipeError(f"{path}: iterations_scale: must be > 0, got {recipe.iterations_scale}")
    return recipe


def validate_config(cls: type, data: Any, file: str | Path, yaml_path: str = "", registry=None) -> Any:
    """Raw YAML ``data`` validated into the dataclass ``cls`` by the rules recipes follow
    (unknown keys with the closest valid one, types, ``__post_init__`` checks, components
    through ``registry``); a :class:`RecipeError` naming ``file`` and the YAML path."""
    return _Validator(registry, str(file), Path(file).resolve().parent, True).dataclass_from(cls, data, yaml_path)


def to_plain(obj: Any) -> Any:
    """A validated config -> plain YAML-able data (defaults filled in)."""
    if isinstance(obj, ComponentSpec):
        out = {"name": obj.name}
        if obj.id:
            out["id"] = obj.id
        out["params"] = to_plain(obj.params)
        return out
    if isinstance(obj, Ramp):
        return obj.to_yaml()
    if is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in fields(obj)
            if f.init and f.name not in _NOT_YAML
        }
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML; runnable again as it is."""
    plain = to_plain(recipe)
    order = ["name", "description", "seed", "device", "iterations_scale", "rasterizer", "stages"]
    plain = {k: plain[k] for k in order if k in plain}
    return "# resolved by fourreal: every default filled in; run it again with `fourreal run`\n" + yaml.safe_dump(
        plain, sort_keys=False, default_flow_style=None, width=100
    )


def component_from_plain(kind: str, data: Any, registry=None, source: str = "<file>") -> ComponentSpec:
    """Validate a plain ``{name, params}`` dict (e.g. saved beside weights) into a
    :class:`ComponentSpec`; errors name ``source``."""
    from .registry import get_registry

    v = _Validator(registry or get_registry(), source, Path.cwd(), check_files=False)
    return v.component(data, kind, "")
