"""Dataclass fields that carry their own help text: the one source of the CLI's flags (saim.cli.flags) for the
core configurations (ModelConfig, TrainConfig, SplitRule)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str) -> Any:
    """A field with its help text (CLI flags and documentation are derived from it)."""
    return field(default=default, metadata={"help": help})
