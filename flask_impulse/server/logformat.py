"""``--log-format json``: every line the service writes (gunicorn's access and error logs, the
app's and libraries' records, warnings) as one JSON object, for log pipelines that parse lines.

Redaction is not done here: the record factory of ``security.redaction`` has already taken
tokens and secrets out of each record's message when it was created, and gunicorn's access
atoms are redacted one by one as they are read (``gunicorn_config.RedactedAtoms``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .. import _json

FORMATS = ("text", "json")

# gunicorn's access atoms, as named fields: the request line, the client, the answer.
_ACCESS_FIELDS = {
    "remote": "h",
    "method": "m",
    "path": "U",
    "query": "q",
    "protocol": "H",
    "status": "s",
    "bytes": "B",
    "duration_us": "D",
    "referer": "f",
    "user_agent": "a",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the traceback
    as ``exception``, and for an access record its request fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        atoms = record.args
        if record.name == "gunicorn.access" and isinstance(atoms, Mapping):
            for field, atom in _ACCESS_FIELDS.items():
                value = atoms[atom]
                if value not in ("-", "", None):
                    entry[field] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return _json.dumps(entry).decode()


def use_json_for_app_logs(level: int = logging.INFO) -> None:
    """Send every record that reaches the root logger, and every warning, to stderr as JSON.

    Done before the app is created: Flask then sees a handler and adds none of its own, whose
    text lines would break the one-object-per-line rule.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
