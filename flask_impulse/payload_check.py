"""Checking decoded JSON against a payload type in pure Python: how declared channels are
validated when msgspec (the fast path, ``flask-impulse[validation]``) is not installed.

It covers what typed channels are declared with: ``TypedDict`` (``Required``/``NotRequired``),
dataclasses, ``str``, ``int``, ``float``, ``bool``, ``None``, ``Any``, lists, tuples, sets,
dicts with string keys, ``Optional``/``Union``, ``Literal``, enums, ``Annotated`` and
``NewType``, recursive types included. It is as strict as msgspec's strict mode (``"1"`` is
not an ``int``, ``true`` is not a number; an ``int`` is a ``float``), ignores unknown object
keys as msgspec does, and words its errors as msgspec does, so an answer does not depend on
whether the extra is installed. Any other type (``datetime``, ``UUID``, ``Decimal``...) is
refused when the checker is built, with the hint to install msgspec.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

#: A check: raise :class:`Mismatch` unless the value (decoded JSON) at the path fits.
Check = Callable[[Any, str], None]

_SCALARS: dict[Any, tuple[str, frozenset[str]]] = {
    # type: (its name in errors, the JSON kinds it takes)
    str: ("str", frozenset({"str"})),
    int: ("int", frozenset({"int"})),
    float: ("float", frozenset({"int", "float"})),
    bool: ("bool", frozenset({"bool"})),
    type(None): ("null", frozenset({"null"})),
}
_ARRAYS: tuple[Any, ...] = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence)
_ARRAYS += (collections.abc.Set, collections.abc.MutableSet)
_MAPPINGS: tuple[Any, ...] = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_ALL_KINDS = frozenset({"str", "int", "float", "bool", "null", "array", "object"})


class Mismatch(ValueError):
    """A value that does not fit its type: ``message`` in msgspec's words, at ``path``
    (``.author.name``, ``[0]``, ``[...]`` for a dict's value; empty at the top)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} - at `${path}`" if path else message)
        self.message = message
        self.path = path


def kind_of(value: Any) -> str:
    """The JSON kind of a decoded value, named as msgspec names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "array" if isinstance(value, list) else "object"


def compile_check(tp: Any) -> Check:
    """The check for ``tp``, built once; raise ``TypeError`` for a type it cannot check."""
    return _Compiler().check(tp)


class _Compiler:
    def __init__(self) -> None:
        # Checks by type, filled before a type's parts are compiled, so recursion ends.
        self._checks: dict[Any, Check] = {}
        self._kinds: dict[Any, tuple[str, frozenset[str]]] = {}

    def check(self, tp: Any) -> Check:
        tp = _strip(tp)
        try:
            found = self._checks.get(tp)
        except TypeError:  # an unhashable annotation
            raise TypeError(f"type {tp!r} is not supported") from None
        if found is not None:
            return found
        cell: list[Check] = []
        self._checks[tp] = lambda value, path: cell[0](value, path)
        cell.append(self._build(tp))
        self._checks[tp] = cell[0]
        return cell[0]

    def kinds(self, tp: Any) -> tuple[str, frozenset[str]]:
        """The name ``tp`` has in msgspec's errors and the JSON kinds it may take."""
        tp = _strip(tp)
        if tp is Any:
            return "any", _ALL_KINDS
        if tp in _SCALARS:
            return _SCALARS[tp]
        origin = typing.get_origin(tp)
        if origin is typing.Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            values = typing.get_args(tp) if origin is typing.Literal else [member.value for member in tp]
            kinds = frozenset(kind_of(value) for value in values)
            return " | ".join(sorted({_SCALARS[type(value)][0] for value in values})), kinds
        if origin in (typing.Union, types.UnionType):
            parts = [self.kinds(arg) for arg in typing.get_args(tp)]
            names = list(dict.fromkeys(name for name, _ in parts))
            return " | ".join(names), frozenset().union(*(kinds for _, kinds in parts))
        if origin in _ARRAYS or tp in _ARRAYS:
            return "array", frozenset({"array"})
        return "object", frozenset({"object"})

    def _build(self, tp: Any) -> Check:
        if tp is Any:
            return _anything
        if tp in _SCALARS:
            return _scalar(*_SCALARS[tp])
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return self._choice(tp, args)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self._choice(tp, [member.value for member in tp])
        if origin in (typing.Union, types.UnionType):
            return self._union(tp, args)
        if typing.is_typeddict(tp):
            return self._typed_dict(tp)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._dataclass(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return _fixed_array([self.check(arg) for arg in args])
        if origin in _ARRAYS or tp in _ARRAYS:
            return _array(self.check(args[0]) if args else _anything)
        if origin in _MAPPINGS or tp in _MAPPINGS:
            if args and _strip(args[0]) not in (str, Any):
                raise TypeError(f"{tp!r}: without msgspec, dict keys must be str")
            return _mapping(self.check(args[1]) if args else _anything)
        if tp is object:
            raise TypeError(f"type {tp!r} is not supported")
        raise TypeError(f"type {tp!r} is not supported without msgspec: pip install flask-impulse[validation]")

    def _choice(self, tp: Any, values: Any) -> Check:
        name, kinds = self.kinds(tp)
        if not all(type(value) in _SCALARS for value in values):
            raise TypeError(f"{tp!r}: only str, int, bool and None values can be checked")
        allowed = {(kind_of(value), value) for value in values}

        def check(value: Any, path: str) -> None:
            kind = kind_of(value)
            if kind not in kinds:
                raise Mismatch(f"Expected `{name}`, got `{kind}`", path)
            if (kind, value) not in allowed:
                raise Mismatch(f"Invalid enum value {value!r}", path)

        return check

    def _union(self, tp: Any, args: tuple[Any, ...]) -> Check:
        name, _ = self.kinds(tp)
        arms = [(self.kinds(arg)[1], self.check(arg)) for arg in args]

        def check(value: Any, path: str) -> None:
            kind = kind_of(value)
            fitting = [arm for kinds, arm in arms if kind in kinds]
            if not fitting:
                raise Mismatch(f"Expected `{name}`, got `{kind}`", path)
            first: Mismatch | None = None
            for arm in fitting:
                try:
                    arm(value, path)
                    return
                except Mismatch as exc:
                    first = first or exc
            assert first is not None
            raise first

        return check

    def _typed_dict(self, tp: Any) -> Check:
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {}
        for key, hint in hints.items():
            # Read from the hint: with postponed annotations, __required_keys__ misses NotRequired.
            qualifier = getattr(typing.get_origin(hint), "_name", None)
            required = qualifier == "Required" or (qualifier != "NotRequired" and key in tp.__required_keys__)
            fields[key] = (self.check(hint), required)
        return _object(fields)

    def _dataclass(self, tp: type) -> Check:
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {}
        for field in dataclasses.fields(tp):
            if field.init:
                required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
                fields[field.name] = (self.check(hints.get(field.name, Any)), required)
        return _object(fields)


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated``, ``Required``/``NotRequired``/``ReadOnly`` or ``NewType``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated or getattr(origin, "_name", None) in ("Required", "NotRequired", "ReadOnly"):
            tp = typing.get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        elif tp is None:
            return type(None)
        else:
            return tp


def _anything(value: Any, path: str) -> None:
    return None


def _scalar(name: str, kinds: frozenset[str]) -> Check:
    def check(value: Any, path: str) -> None:
        kind = kind_of(value)
        if kind not in kinds:
            raise Mismatch(f"Expected `{name}`, got `{kind}`", path)

    return check


def _array(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise Mismatch(f"Expected `array`, got `{kind_of(value)}`", path)
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]")

    return check


def _fixed_array(items: list[Check]) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise Mismatch(f"Expected `array`, got `{kind_of(value)}`", path)
        if len(value) != len(items):
            raise Mismatch(f"Expected `array` of length {len(items)}", path)
        for index, (item, element) in enumerate(zip(items, value, strict=True)):
            item(element, f"{path}[{index}]")

    return check


def _mapping(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise Mismatch(f"Expected `object`, got `{kind_of(value)}`", path)
        for element in value.values():
            item(element, f"{path}[...]")

    return check


def _object(fields: dict[str, tuple[Check, bool]]) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise Mismatch(f"Expected `object`, got `{kind_of(value)}`", path)
        for key, element in value.items():  # in the order of the JSON, as msgspec reads it
            if key in fields:
                fields[key][0](element, f"{path}.{key}")
        for key, (_, required) in fields.items():
            if required and key not in value:
                raise Mismatch(f"Object missing required field `{key}`", path)

    return check
