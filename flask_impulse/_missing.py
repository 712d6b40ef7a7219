"""The sentinel of a push without a ``payload`` key, apart from the body parser that makes it
and the broker and channels that read it, so that none of them imports another for it.

Imports nothing.
"""

from __future__ import annotations

from typing import Any


class _Missing:
    """A push without a ``payload`` key: encoded without one, as the reference broker does."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
