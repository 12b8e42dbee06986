"""Field types that plugin config dataclasses use beyond plain Python types.

A plugin's config is a dataclass whose fields carry type annotations; the recipe loader
(:mod:`fourreal_core.recipe`) validates YAML against them. Supported annotations:
``int``, ``float``, ``str``, ``bool``, ``Optional[X]``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Literal[...]``, nested dataclasses, and the three below:

* :class:`Ramp` -- a float, or ``[start_step, v0, v1, end_step]`` ramped linearly
  (threestudio style); ``ramp.at(step)`` gives the value.
* ``InputPath`` -- a path to a file or folder that must exist (checked by ``validate``);
  relative paths are relative to the recipe file.
* ``Component("kind")`` -- a nested ``{name: ..., params: {...}}`` resolved through the
  registry; the field's value becomes a :class:`ComponentSpec` whose ``build()`` makes it.
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


__all__ = ["Ramp", "InputPath", "InputFile", "Component", "ComponentSpec", "component_default", "Optional"]
