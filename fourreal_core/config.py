"""Field types that plugin config dataclasses use beyond plain Python types.

A plugin's config is a dataclass whose fields carry type annotations; the recipe loader
(:mod:`fourreal_core.recipe`) validates YAML against them. Supported annotations:
``int``, ``float``, ``str``, ``bool``, ``Optional[X]``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Literal[...]``, nested dataclasses, and the four below:

* :class:`Ramp` -- a float, or ``[start_step, v0, v1, end_step]`` ramped linearly
  (threestudio style); ``ramp.at(step)`` gives the value.
* ``InputPath`` -- a path to a file or folder that must exist (checked by ``validate``);
  relative paths are relative to the recipe file.
* ``Component("kind")`` -- a nested ``{name: ..., params: {...}}`` resolved through the
  registry; the field's value becomes a :class:`ComponentSpec` whose ``build()`` makes it.
* :data:`Steps` -- an iteration count (phase length, densification window or interval,
  checkpoint interval, SH-degree interval...). The recipe's ``iterations_scale`` multiplies
  every ``Steps`` field, and the step bounds of every :class:`Ramp`, exactly once:
  :func:`scale_steps` applied to a stage's config before it builds its components.
  ``steps_floor(n, why)`` declares a count that never scales below ``n`` (with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union


class Ramp:
    """A scalar that may ramp linearly between two steps.

    ``Ramp(0.5)`` is constant; ``Ramp([1000, 0.0, 1.0, 2000])`` is 0 until step 1000,
    then rises linearly to 1 at step 2000 and stays there.
    """

    __slots__ = ("start", "v0", "v1", "end")

    def __init__(self, value: Union[float, int, list, tuple, "Ramp"]):
        if isinstance(value, Ramp):
            self.start, self.v0, self.v1, self.end = value.start, value.v0, value.v1, value.end
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.start, self.v0, self.v1, self.end = 0, float(value), float(value), 0
            return
        if isinstance(value, (list, tuple)) and len(value) == 4:
            s, a, b, e = value
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                if e < s:
                    raise ValueError(f"ramp end_step {e} is before start_step {s}")
                self.start, self.v0, self.v1, self.end = int(s), float(a), float(b), int(e)
                return
        raise ValueError(f"expected a number or [start_step, v0, v1, end_step], got {value!r}")

    def at(self, step: int) -> float:
        if self.end == self.start:
            return self.v0 if step < self.start else self.v1
        if step <= self.start:
            return self.v0
        if step >= self.end:
            return self.v1
        f = (step - self.start) / (self.end - self.start)
        return self.v0 + f * (self.v1 - self.v0)

    @property
    def is_constant(self) -> bool:
        return self.v0 == self.v1

    def scaled_steps(self, factor: float) -> "Ramp":
        """The same ramp with its steps multiplied by ``factor`` (iterations_scale)."""
        r = Ramp(self)
        r.start = int(round(self.start * factor))
        r.end = int(round(self.end * factor))
        return r

    def to_yaml(self) -> Union[float, list]:
        if self.start == self.end and self.v0 == self.v1:
            return self.v0
        return [self.start, self.v0, self.v1, self.end]

    def __float__(self) -> float:
        if not self.is_constant:
            raise TypeError("a ramped value has no single float; use .at(step)")
        return self.v0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (int, float)):
            return self.is_constant and self.v0 == float(other)
        if isinstance(other, Ramp):
            return self.to_yaml() == other.to_yaml()
        return NotImplemented

    def __repr__(self) -> str:
        return f"Ramp({self.to_yaml()!r})"


@dataclass(frozen=True)
class _InputPathMarker:
    """Annotation marker: the string is a path that must exist (and be a file if ``file``)."""

    file: bool = False


InputPath = Annotated[str, _InputPathMarker()]
"""A path (str) to an existing file or folder; relative to the recipe file."""

InputFile = Annotated[str, _InputPathMarker(file=True)]
"""A path (str) to an existing, readable file; relative to the recipe file."""


@dataclass(frozen=True)
class StepCount:
    """Annotation marker of an iteration count (see :data:`Steps`).

    ``floor``: a positive count scales to ``max(min(count, floor), round(count * scale))``,
    so it never drops below ``floor`` (nor below its own unscaled value when that is
    smaller); ``reason`` says why the floor exists (shown in docs and tests).
    """

    floor: int = 1
    reason: str = ""

    def scale(self, count: int, factor: float) -> int:
        count = int(count)
        if count <= 0:
            return count
        return max(min(count, int(self.floor)), int(round(count * factor)))


Steps = Annotated[int, StepCount()]
"""An iteration count that ``iterations_scale`` multiplies (positive counts stay >= 1)."""


def steps_floor(floor: int, reason: str) -> Any:
    """A :data:`Steps` annotation that never scales below ``floor``, for ``reason``."""
    return Annotated[int, StepCount(int(floor), reason)]


def step_count_marker(ann: Any) -> Optional[StepCount]:
    """The :class:`StepCount` of an annotation (``Steps``, ``Optional[Steps]``...), or None."""
    import typing

    if typing.get_origin(ann) is Annotated:
        for m in typing.get_args(ann)[1:]:
            if isinstance(m, StepCount):
                return m
        return None
    if typing.get_origin(ann) is Union:
        for a in typing.get_args(ann):
            m = step_count_marker(a)
            if m is not None:
                return m
    return None


def scale_steps(obj: Any, factor: float) -> Any:
    """A copy of a validated config with every :data:`Steps` field and every :class:`Ramp`'s
    step bounds multiplied by ``factor`` (the recipe's ``iterations_scale``), recursing into
    nested dataclasses, lists, dicts and components' params. ``factor == 1`` returns ``obj``.

    Stages call this once on their own config, before building anything from it, so no
    component ever sees an unscaled count or scales one twice."""
    import dataclasses
    import typing

    if factor == 1.0:
        return obj
    if isinstance(obj, Ramp):
        return obj.scaled_steps(factor)
    if isinstance(obj, ComponentSpec):
        return dataclasses.replace(obj, params=scale_steps(obj.params, factor))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        try:
            hints = typing.get_type_hints(type(obj), include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable hints: scale nothing at this level
            hints = {}
        changes = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            val = getattr(obj, f.name)
            marker = step_count_marker(hints.get(f.name))
            if marker is not None and isinstance(val, int) and not isinstance(val, bool):
                changes[f.name] = marker.scale(val, factor)
            else:
                new = scale_steps(val, factor)
                if new is not val:
                    changes[f.name] = new
        return dataclasses.replace(obj, **changes) if changes else obj
    if isinstance(obj, list):
        new = [scale_steps(v, factor) for v in obj]
        return new if any(a is not b for a, b in zip(new, obj)) else obj
    if isinstance(obj, tuple):
        new = tuple(scale_steps(v, factor) for v in obj)
        return new if any(a is not b for a, b in zip(new, obj)) else obj
    if isinstance(obj, dict):
        new = {k: scale_steps(v, factor) for k, v in obj.items()}
        return new if any(new[k] is not obj[k] for k in obj) else obj
    return obj


@dataclass(frozen=True)
class _ComponentMarker:
    kind: str


@dataclass
class ComponentSpec:
    """A resolved ``{name, params}`` component: its kind, name and validated config."""

    kind: str
    name: str
    params: Any = None
    source: str = ""  # YAML path, for messages
    id: Optional[str] = None  # stages only: a second instance of one plugin needs its own id

    @property
    def label(self) -> str:
        """The name a run uses for this component (its ``id`` if given, else its ``name``)."""
        return self.id or self.name

    def build(self, registry=None) -> Any:
        """Instantiate through the registry (the process-wide one by default)."""
        from .registry import get_registry

        reg = registry or get_registry()
        return reg.create(self.kind, self.name, self.params)


def Component(kind: str) -> Any:  # noqa: N802 - reads like a type in annotations
    """Annotation for a nested component of plugin kind ``kind``."""
    return Annotated[ComponentSpec, _ComponentMarker(kind)]


def component_default(kind: str, name: str, **params: Any) -> Any:
    """A dataclass ``field`` default for a ``Component(kind)``: ``{name: ..., params}``."""
    return field(default_factory=lambda: {"name": name, "params": dict(params)})


class ConfigValueError(ValueError):
    """A bad value in a config, at ``path`` (dotted, relative to the config: ``iterations``,
    ``scheduler.params.phases[0].train[1]``). Raised from a config's ``__post_init__`` or its
    ``check_recipe(registry, label)``; recipe validation reports it in one line as
    ``FILE: <the config's YAML path>.<path>: message``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def at_least(cfg: Any, **minimums: float) -> None:
    """``at_least(self, width=1, chunk=0)`` from a config's ``__post_init__``: each named field
    that is set (not None) must be >= its minimum, else a :class:`ConfigValueError` at that
    field (``w_t.params.width: must be >= 1, got 0``) -- counts and sizes that would otherwise
    end in an internal error deep inside torch, or silently train nothing."""
    for name, low in minimums.items():
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, bool) and isinstance(v, (int, float)) and not v >= low:
            raise ConfigValueError(name, f"must be >= {low:g}, got {v}")


def above(cfg: Any, **minimums: float) -> None:
    """Like :func:`at_least`, strictly greater (frame rates, lengths)."""
    for name, low in minimums.items():
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, bool) and isinstance(v, (int, float)) and not v > low:
            raise ConfigValueError(name, f"must be > {low:g}, got {v}")


def renamed(old: str, new: str, what: str) -> None:
    """A recipe key that was renamed: a config keeps ``old`` as a ``None``-default field only to
    say so and calls this from ``__post_init__`` when it is set; recipe validation reports the
    one line (with the YAML path)."""
    raise ValueError(f"{old!r} was renamed {new!r} ({what}); write `{new}:` instead of `{old}:`")


__all__ = [
    "Ramp", "InputPath", "InputFile", "Component", "ComponentSpec", "component_default", "Optional",
    "Steps", "StepCount", "steps_floor", "scale_steps", "step_count_marker", "renamed", "ConfigValueError",
    "at_least", "above",
]
