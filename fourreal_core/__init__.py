"""fourreal core: types, plugin interfaces, registry, recipes, trainer and run folders.

The core names no plugin: everything concrete arrives through the ``fourreal``
entry-point group (see :mod:`fourreal_core.registry`).
"""

from .errors import FourRealError, InputError, PluginError, RecipeError, RunDirError
from .registry import Registry, get_registry, hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "FourRealError",
    "InputError",
    "PluginError",
    "RecipeError",
    "RunDirError",
    "Registry",
    "get_registry",
    "hookimpl",
    "hookspec",
    "__version__",
]
