"""The completion journal: which pieces of a preprocessing run are finished, and their results.

``DIR/.journal/{name}.json`` is written atomically (temporary file, fsync, rename) once a
piece is complete, so a killed run restarted with the same settings skips what is done
and nothing half-written ever looks complete. The journal is stamped with the run's
settings and the state of its input files (name, size, modification time), written only
after the inputs have been checked:

- other settings: refused (finish the run with its settings, or choose another ``--out``);
- the same settings, inputs changed since (a bad file fixed, say): the pieces already done
  may hold the old data, so the run starts over, saying which input changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write, encode_json

JOURNAL = ".journal"
STAMP = "settings.json"


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Input files that differ between two ``{group: [[name, size, ...], ...]}`` tables."""
    out = []
    for group in sorted(set(old) | set(new)):
        a = {x[0]: tuple(x) for x in old.get(group, [])}
        b = {x[0]: tuple(x) for x in new.get(group, [])}
        out += [f"{group}: {n}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    return out


class Journal:
    def __init__(self, out: Path, settings: dict[str, Any], inputs: dict[str, Any]) -> None:
        self.dir = out / JOURNAL
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stamp = self.dir / STAMP
        self.wanted = json.loads(encode_json({"settings": settings, "inputs": inputs}))

    @classmethod
    def open(
        cls,
        out: Path,
        settings: dict[str, Any],
        inputs: dict[str, Any],
        outputs: Callable[[], None],
    ) -> Journal:
        """The journal of ``out``: resumed, started, or (inputs changed) started over, in
        which case ``outputs()`` first removes what the earlier run wrote."""
        journal = cls(out, settings, inputs)
        if not journal.stamp.exists():
            atomic_write(journal.stamp, encode_json(journal.wanted))
            return journal
        found = json.loads(journal.stamp.read_text())
        if found.get("settings") != journal.wanted["settings"]:
            raise ValueError(
                f"{out} holds an unfinished run with other settings; finish it with those "
                "settings, or choose another --out (or delete the directory)"
            )
        changed = changed_inputs(found.get("inputs", {}), journal.wanted["inputs"])
        if changed:
            print(
                f"{out}: inputs changed since the unfinished run began ({', '.join(changed[:3])}"
                f"{' ...' if len(changed) > 3 else ''}); starting over"
            )
            shutil.rmtree(journal.dir)
            outputs()
            return cls.open(out, settings, inputs, outputs)
        return journal

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
