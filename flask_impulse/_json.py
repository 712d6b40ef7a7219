"""Compact JSON in and out, through orjson (a dependency), with the standard library for
what orjson refuses but JSON allows.

Every message is encoded once per push, so the encoder sits on the hot path; orjson is
several times faster than the standard library and produces the same compact form.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the official broker's ``JSON.stringify`` writes it (NaN and
    infinities included: they become ``null``)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # orjson refuses integers beyond 64 bits and nesting past 254 levels, which JSON allows.
        pass
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # A lone surrogate is valid JSON ("\udfff") but not UTF-8: write it back as that escape,
    # as JSON.stringify does, so that the reference broker's pushes pass through unchanged.
    return text.encode("utf-8", "backslashreplace")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A run of 19 digits: an integer that may lie beyond 64 bits, which orjson would turn into a
# float and round. The search is cheap; a false alarm (digits in a string) only costs speed.
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")


def loads(data: bytes | str) -> Any:
    """Strict JSON: ``NaN`` and ``Infinity`` are refused, as every JSON client would, and so
    is nesting too deep to parse (a ``ValueError``, never a ``RecursionError``). Integers
    come back exact, however long."""
    long_digits = _LONG_DIGITS.search(data) if isinstance(data, str) else _LONG_DIGITS_BYTES.search(data)
    if long_digits is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # Retry below so that what orjson refuses (lone surrogates, deep nesting) behaves as json does.
            pass
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
