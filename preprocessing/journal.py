"""The completion journal: which pieces of a preprocessing run are finished, and their results.

``DIR/.journal/{name}.json`` is written atomically (temporary file, fsync, rename) once a
piece is complete, so a killed run restarted with the same settings skips what is done
and nothing half-written ever looks complete. The journal is tied to a fingerprint of the
settings; a different configuration refuses to resume it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write, encode_json


class Journal:
    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.dir = out / ".journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = self.dir / "settings.json"
        wanted = json.loads(encode_json(fingerprint))
        if stamp.exists():
            if json.loads(stamp.read_text()) != wanted:
                raise ValueError(
                    f"{out} holds an unfinished run with other settings; finish it with those "
                    "settings, or choose another --out (or delete the directory)"
                )
        else:
            atomic_write(stamp, encode_json(wanted))

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def done(self, name: str) -> bool:
        return self._path(name).exists()

    def load(self, name: str) -> Any:
        return json.loads(self._path(name).read_text())

    def record(self, name: str, result: Any) -> None:
        atomic_write(self._path(name), encode_json(result))

    def close(self) -> None:
        """The run is complete (manifest written): the journal is no longer needed."""
        shutil.rmtree(self.dir, ignore_errors=True)
