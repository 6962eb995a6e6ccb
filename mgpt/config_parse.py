"""Config values from text and dicts, validated by pydantic against the dataclasses' field types.

:mod:`mgpt.config` declares the fields (``Literal`` enumerations, ``Annotated`` bounds); this module
turns ``--set a.b=value`` text into Python values, hands whole configs to ``pydantic.TypeAdapter``
for coercion and checking, and rewrites pydantic's errors as one line naming the key, the value and
what is allowed, e.g. ``model.dtype='float33': expected one of 'float32', 'bfloat16', 'float16'``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import types
import typing
from typing import Any

import pydantic
import yaml


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key, the value and what is allowed."""


def _strip(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` and ``Optional[...]``."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(inner) != 1:
                return annotation
            annotation = inner[0]
        else:
            return annotation


def _is_optional(annotation: Any) -> bool:
    annotation = annotation if typing.get_origin(annotation) is not typing.Annotated else typing.get_args(annotation)[0]
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(annotation)


def _is_text(annotation: Any) -> bool:
    """True for ``str`` and ``Literal`` of strings: override text is the value as written."""
    bare = _strip(annotation)
    if typing.get_origin(bare) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(bare))
    return bare is str


def _literal(text: str) -> Any:
    """Python literals first (``(('data', 4),)``, ``1e-4``), then YAML flow (``[neg,pos]``, JSON,
    ``true``, ``null``); anything else is the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def parse_text(text: str, annotation: Any) -> Any:
    """The Python value of override ``text`` for a field declared ``annotation`` (not yet validated)."""
    if _is_optional(annotation) and text.lower() in ("none", "null"):
        return None
    if _is_text(annotation):
        return text
    bare = _strip(annotation)
    if bare is bool and text.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[text.lower()]
    if typing.get_origin(bare) is tuple and not text:
        return ()
    value = _literal(text)
    if typing.get_origin(bare) is tuple:
        if isinstance(value, str):  # a,b,c shorthand for a tuple of strings
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (int, float)):
            return (value,)
    return value


def field_types(cls) -> dict[str, Any]:
    """Each field's declared type (``Annotated`` kept)."""
    return typing.get_type_hints(cls, include_extras=True)


def _with_override(obj: Any, parts: list[str], text: str, key: str) -> Any:
    """``obj`` (a config dataclass) with the field at ``parts`` set from ``text`` (validated later)."""
    name = parts[0]
    types_ = field_types(type(obj))
    if name not in types_:
        where = key[: len(key) - len(".".join(parts))].rstrip(".") or "<top level>"
        raise ConfigError(f"unknown config key {key!r}: valid keys under {where} are: {', '.join(sorted(types_))}")
    current, annotation = getattr(obj, name), types_[name]
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            valid = ", ".join(f"{key}.{k}" for k in sorted(field_types(type(current))))
            raise ConfigError(f"{key}={text!r}: {key} is a section, not a value; set one of its keys: {valid}")
        new = parse_text(text, annotation)
    elif dataclasses.is_dataclass(current):
        new = _with_override(current, parts[1:], text, key)
    elif isinstance(current, dict):  # optimizer.kwargs.b1=0.9: one entry of a dict field
        value_type = (typing.get_args(_strip(annotation)) or (Any, Any))[1]
        new = {**current, ".".join(parts[1:]): parse_text(text, value_type)}
    else:
        raise ConfigError(f"unknown config key {key!r}: {'.'.join(key.split('.')[:-len(parts) + 1])} is a value, "
                          "not a section")
    return dataclasses.replace(obj, **{name: new})


def apply_text_overrides(config: Any, overrides) -> Any:
    """``config`` with every ``a.b=value`` applied, then validated whole (see :func:`validated`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optimizer.learning_rate=1e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        config = _with_override(config, key.split("."), text.strip(), key)
    return validated(type(config), as_plain(config))


def as_plain(config: Any) -> Any:
    """Nested dicts of the dataclass fields (tuples stay tuples): what pydantic validates from."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config


@functools.lru_cache(maxsize=None)
def _adapter(cls) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


def validated(cls, data: Any) -> Any:
    """A ``cls`` instance from plain ``data``, every field coerced and checked; fails as :class:`ConfigError`."""
    try:
        return _adapter(cls).validate_python(data)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_error(cls, error.errors()[0])) from None


def _annotation_at(cls, loc: tuple) -> Any:
    """The declared type at a pydantic error location, or None when it cannot be followed."""
    annotation: Any = cls
    for part in loc:
        bare = _strip(annotation)
        if dataclasses.is_dataclass(bare) and isinstance(part, str):
            annotation = field_types(bare).get(part)
        elif typing.get_origin(bare) is tuple and isinstance(part, int):
            args = typing.get_args(bare)
            annotation = args[0] if len(args) == 2 and args[1] is Ellipsis else args[part] if part < len(args) else None
        elif typing.get_origin(bare) is dict:
            annotation = typing.get_args(bare)[1] if typing.get_args(bare) else None
        else:
            return None
        if annotation is None:
            return None
    return annotation


def _key_name(cls, loc: tuple) -> str:
    """``train.eval_splits[1]``, ``parallel.mesh[0][1]``, ``optimizer.kwargs.b1``: the key as ``--set`` spells it."""
    name = ""
    for i, part in enumerate(loc):
        if part == "[key]":
            break
        in_tuple = typing.get_origin(_strip(_annotation_at(cls, loc[:i]))) is tuple
        name += f"[{part}]" if in_tuple else f".{part}"
    return name.lstrip(".") or cls.__name__


_EXPECTED = {
    "int_parsing": "expected an int", "int_type": "expected an int", "int_from_float": "expected an int",
    "float_parsing": "expected a float", "float_type": "expected a float",
    "bool_parsing": "expected a bool (true/false)", "bool_type": "expected a bool (true/false)",
    "string_type": "expected a string", "dict_type": "expected a dict, e.g. {{a: 1}} or JSON",
    "tuple_type": "expected a list, e.g. [a, b] or a,b", "list_type": "expected a list, e.g. [a, b]",
    "greater_than_equal": "expected a value >= {ge}", "greater_than": "expected a value > {gt}",
    "less_than_equal": "expected a value <= {le}", "less_than": "expected a value < {lt}",
    "too_short": "expected at least {min_length} item(s)", "too_long": "expected at most {max_length} item(s)",
}


def describe_error(cls, error: dict) -> str:
    """One line for one pydantic error: ``key=value: what is allowed``."""
    loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "unexpected_keyword_argument":
        parent = _strip(_annotation_at(cls, loc[:-1]))
        valid = sorted(field_types(parent)) if dataclasses.is_dataclass(parent) else []
        where = ".".join(map(str, loc[:-1])) or "<top level>"
        return f"unknown config key {'.'.join(map(str, loc))!r}: valid keys under {where} are: {', '.join(valid)}"
    key = _key_name(cls, loc)
    if loc and loc[-1] == "[key]":  # a dict's key, not its value
        key_type = (typing.get_args(_strip(_annotation_at(cls, loc[:-2]))) or (str,))[0]
        if typing.get_origin(key_type) is typing.Literal:
            allowed = ", ".join(repr(a) for a in typing.get_args(key_type))
            return f"{key}: the key {error['input']!r} is not one of {allowed}"
        return f"{key}: the key {error['input']!r} must be a string"
    annotation = _annotation_at(cls, loc)
    if kind == "literal_error" and annotation is not None:
        allowed = ", ".join(repr(a) for a in typing.get_args(_strip(annotation)))
        expected = f"expected one of {allowed}"
    elif kind == "dataclass_type" and annotation is not None:
        keys = ", ".join(sorted(field_types(_strip(annotation))))
        expected = f"{key} is a section, not a value; set one of its keys ({keys})"
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind].format(**{k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()})
    else:
        expected = error["msg"][:1].lower() + error["msg"][1:]
    return f"{key}={error['input']!r}: {expected}"
