"""The `fourreal` command-line interface."""
