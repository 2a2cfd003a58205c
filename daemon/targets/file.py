"""The ``file`` target: one JSON file per action in a directory.

Makes the whole flow inspectable and testable (a drill, a CI test, a
hand-off to another tool watching the directory). The file is named by the
action's idempotency key and written atomically, so a redelivery after a
crash rewrites the same file instead of adding a second one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from daemon.actions import Action, PermanentError, Receipt, RetryableError


def file_name(key: str) -> str:
    """A safe file name for an idempotency key."""
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", key) + ".json"


class FileTarget:
    """Writes ``<directory>/<key>.json`` for each action."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory

    async def deliver(self, action: Action) -> Receipt:
        """Write the action as JSON; a full disk is retryable, a bad directory is not."""
        path = self.directory / file_name(action.key)
        doc = {
            "key": action.key,
            "incident": action.incident_id,
            "medium": action.medium,
            "to": action.to,
            "subject": action.subject,
            "body": action.body,
            "created_at": action.created_at,
            "data": action.data,
            "test": action.test,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except (NotADirectoryError, PermissionError) as exc:
            raise PermanentError(f"cannot write {path}: {exc}") from exc
        except OSError as exc:
            raise RetryableError(f"cannot write {path}: {exc}") from exc
        return Receipt(self.name, path.name, {"path": str(path)})
