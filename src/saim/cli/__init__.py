"""The `saim` command line: research (emulate, experiment, data), the embedded stack (up, demo, drive) and a
deployment's administration (bootstrap, admin, export)."""

from saim.cli.main import main

__all__ = ["main"]
