"""Errors that end a command with one clear line (exit code 2) instead of a traceback."""

from __future__ import annotations


class FourRealError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits with 2."""

    exit_code = 2


class PluginError(FourRealError):
    """A plugin is missing, duplicated, or failed to load."""


class RecipeError(FourRealError):
    """A recipe is malformed; the message starts with ``FILE: yaml.path:``."""


class InputError(FourRealError):
    """An input file is missing or unreadable; the message names the file."""


class RunDirError(FourRealError):
    """The output folder cannot be used for this run."""
