"""Files written so that nothing half-written carries a final name, and read back verified.

``atomic_file`` writes through a temporary file beside the target, fsynced and renamed;
``encode_json`` gives canonical bytes (sorted keys), so that reruns are byte-identical;
``file_sha256`` is the checksum the manifest records for every shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def encode_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed separators, trailing newline."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it, fsynced and renamed into place.

    Nothing half-written ever carries the final name; on an error the temporary file goes.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise named(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def named(err: OSError, path: str | Path) -> OSError:
    """``err`` naming ``path`` where the system left the file out (a failed ``write``:
    a full disk, a file-size limit), so that the message says which file."""
    if err.filename is not None or err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def atomic_write(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)
