"""Command-line flags derived from the fields of a configuration dataclass (saim.model.config), so that a setting's
name, type, choices, default and help are written once.

A flag's default is None ("not given"); `from_args` keeps the dataclass's own default for every flag not given.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Literal, get_args, get_origin


def _flag(name: str, rename: dict[str, str]) -> str:
    return "--" + rename.get(name, name).replace("_", "-")


def _dest(cls: type, name: str) -> str:
    return f"{cls.__name__}.{name}"


def _words_or(plain: type, words: tuple[str, ...]):
    """An argparse type for `float | Literal["auto"]`: one of the words, or a value of the plain type."""

    def parse(text: str):
        return text if text in words else plain(text)

    parse.__name__ = " or ".join([*words, plain.__name__])  # argparse names it in "invalid ... value"
    return parse


def _base_type(annotation) -> object:
    """`int | None` -> int; `float | Literal["auto"]` -> a parser of either; Literal and plain types unchanged."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        words = tuple(w for a in args if get_origin(a) is Literal for w in get_args(a))
        plain = [a for a in args if get_origin(a) is not Literal]
        if words and len(plain) == 1:
            return _words_or(plain[0], words)
        return annotation
    return annotation


def add_fields(
    parser: argparse.ArgumentParser, cls: type, rename: dict[str, str] | None = None, defaults: dict | None = None
) -> None:
    """One flag per field of `cls` that has help metadata (fields without it are set by the program itself).
    `defaults`: this command's own defaults for some fields (pass the same to `from_args`)."""
    rename, defaults = rename or {}, defaults or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind = _base_type(hints[f.name])
        help_text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if f.name in defaults:
            help_text += f" (default here: {defaults[f.name]})"
        elif "default" not in help_text:  # a help text that explains its default (None: half of ...) keeps it
            help_text += f" (default: {f.default})"
        kwargs: dict = {"dest": _dest(cls, f.name), "default": None, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            kwargs["choices"] = list(get_args(kind))
        else:
            kwargs.update(type=kind, metavar=f.name.upper())
        parser.add_argument(_flag(f.name, rename), **kwargs)


def from_args(args: argparse.Namespace, cls: type, defaults: dict | None = None):
    """An instance of `cls` with its defaults (or this command's `defaults`), except for every flag that was given."""
    given = {
        f.name: value for f in dataclasses.fields(cls) if (value := getattr(args, _dest(cls, f.name), None)) is not None
    }
    return cls(**{**(defaults or {}), **given})
