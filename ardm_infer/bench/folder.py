"""The result folder of a benchmark run, and why its contents can be trusted.

Layout of ``out/``::

    .lock            held (``fcntl.flock``) by the run writing the folder; holds its pid
    config.json      the run's configuration (the ``config`` attribute of results.nc)
    cells/<label>__<regime>__<key>.nc   one finished cell each, written atomically
    results.nc       the combined result, written last

Guarantees:

* **One writer.**  A run takes an exclusive lock on ``out/.lock`` for its whole duration; a
  second run on the same folder (another process, or a second call in this one) gets
  :class:`ResultFolderError` naming the folder and the holder's pid.  The lock is the
  kernel's, so it dies with its process: the lock of a killed run is taken over by the next
  run, whatever pid the file still names.  POSIX only (``fcntl``), as is the package.
* **One configuration.**  A run whose configuration differs from the folder's
  ``config.json`` is refused unless ``resume=True`` (reuse the cells whose key still
  matches) or ``overwrite=True`` (delete the other run's cells and results).  Before a run
  writes its ``config.json`` it removes a ``results.nc`` of another configuration, so the
  folder never holds the ``config.json`` of one run beside the ``results.nc`` of another.
* **Verified cells.**  Every cell file carries the sha256 of its data (variables,
  coordinates and attributes) in its ``checksum`` attribute; ``resume`` recomputes, with a
  message on stderr, a cell whose data no longer match it (edited, truncated or corrupt),
  that was computed with other checkpoints, or that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_write_text
from . import cells

__all__ = [
    "ResultFolder",
    "ResultFolderError",
    "data_checksum",
    "read_cell",
    "write_atomic",
    "write_cell",
]

LOCK_NAME = ".lock"


class ResultFolderError(ValueError):
    """The ``out`` folder cannot be used by this run (busy, another run's, not writable)."""


# ----------------------------------------------------------------------------- files


def write_atomic(ds: Any, path: Path) -> None:
    """Write ``ds`` to ``path`` (netCDF, h5netcdf) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _canonical(values: Any) -> tuple[str, bytes]:
    array = np.asarray(values)
    if array.dtype.kind in "OUS":  # strings: fixed width in memory, variable length on disk
        return "str", json.dumps([str(v) for v in array.ravel().tolist()]).encode()
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    return array.dtype.str, np.ascontiguousarray(array).tobytes()


def data_checksum(ds: Any) -> str:
    """sha256 (hex) of a dataset's data: every coordinate and variable (name, dims, shape,
    dtype, values) and every attribute except ``checksum``; unchanged by a netCDF round trip
    (strings and booleans are hashed in a canonical form)."""
    digest = hashlib.sha256()
    for kind, items in (("coordinate", ds.coords), ("variable", ds.data_vars)):
        for name in sorted(items, key=str):
            item = items[name]
            dtype, data = _canonical(item.values)
            header = [kind, str(name), [str(d) for d in item.dims], list(item.shape), dtype]
            digest.update(json.dumps(header).encode())
            digest.update(data)
    attrs = {str(k): str(v) for k, v in ds.attrs.items() if k != "checksum"}
    digest.update(json.dumps(attrs, sort_keys=True).encode())
    return digest.hexdigest()


def write_cell(ds: Any, path: Path) -> None:
    """Write a finished cell with its ``checksum`` attribute (the dataset gains it too)."""
    ds.attrs["checksum"] = data_checksum(ds)
    write_atomic(ds, path)


def _note(message: str) -> None:
    print(f"ardm_infer: {message}", file=sys.stderr)


def read_cell(path: Path, task: cells.CellTask) -> Any | None:
    """The finished cell at ``path`` if it is ``task``'s and intact, else None (recompute it).

    A cell is reused only if its key matches the task, its data match its checksum, its
    checkpoints' sha256 match today's cards and it did not fail; otherwise a message on
    stderr says why it is recomputed (a missing file or another key is silent).
    """
    import xarray as xr

    if not path.exists():
        return None
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as err:  # a corrupt or partial file: recompute the cell
        _note(f"cell file {path} unreadable ({err}); recomputing")
        return None
    if ds.attrs.get("key") != task.key():
        return None
    stored = ds.attrs.get("checksum")
    if stored is None or stored != data_checksum(ds):
        what = "has no checksum" if stored is None else "does not match its checksum"
        _note(f"cell file {path} {what} (edited or damaged); recomputing")
        return None
    artifacts = json.dumps(cells.artifact_hashes(task.ardm, task.spec, task.pde), sort_keys=True)
    if ds.attrs.get("artifacts") != artifacts:
        _note(f"{path.name} was computed with other checkpoints (sha256 differs); recomputing")
        return None
    if "failed" in ds and bool(np.asarray(ds["failed"].values).any()):
        reason = str(np.asarray(ds["failure"].values).ravel()[0]) if "failure" in ds else "?"
        _note(f"{path.name} failed last time ({reason}); retrying")
        return None
    return ds


# ----------------------------------------------------------------------------- the folder


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


class ResultFolder:
    """The ``out`` folder of one run: lock, configuration check, cell and result files.

    Use as a context manager (``with ResultFolder(out).open(config, resume, overwrite)``);
    the lock is released on exit, whatever happened.

    Args:
        path: the folder (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -------------------------------------------------------------- lock

    def _acquire(self) -> None:
        import fcntl

        lock = self.path / LOCK_NAME
        for _ in range(10):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise ResultFolderError(
                    f"the out folder {self.path} is in use by another benchmark run "
                    f"({holder}); wait for it to finish or choose another out folder"
                ) from None
            try:  # the file we locked must still be the one at the path (see release)
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - only under a storm of concurrent runs
            raise ResultFolderError(f"could not lock the out folder {self.path}")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._lock_fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            return f"pid {record['pid']} on {record['host']}, started {record['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown"

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.path / LOCK_NAME).unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    # -------------------------------------------------------------- open

    def open(
        self, run_config: dict[str, Any], resume: bool = False, overwrite: bool = False
    ) -> ResultFolder:
        """Create and lock the folder, check it against ``run_config``, write ``config.json``.

        Raises:
            ResultFolderError: the path is a file or not writable, another run holds the
                lock, or the folder holds another configuration and neither ``resume`` nor
                ``overwrite`` is set.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ResultFolderError(f"out {self.path} exists and is not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except ResultFolderError:
            raise
        except OSError as err:
            raise ResultFolderError(
                f"cannot write to the out folder {self.path}: {err.strerror or err}"
            ) from err
        try:
            self._check_config(json.loads(json.dumps(run_config)), resume, overwrite)
        except BaseException:
            self.release()
            raise
        return self

    def _check_config(self, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
        config_path = self.path / "config.json"
        results = self.path / "results.nc"
        old: dict[str, Any] | None
        try:
            old = json.loads(config_path.read_text())
        except FileNotFoundError:
            old = None
        except (OSError, ValueError):
            old = {"unreadable config.json": True}
        other = old is not None and old != config
        if other and not (resume or overwrite):
            assert old is not None
            differ = ", ".join(_config_differences(old, config)) or "?"
            raise ResultFolderError(
                f"the out folder {self.path} holds another run (config.json differs in: "
                f"{differ}); pass resume=True to reuse its matching cells, overwrite=True to "
                "replace it, or choose another out folder"
            )
        if overwrite and other:
            removed = self._remove_cells()
            _note(f"overwrite: removed {removed} cell files of another run in {self.path}")
        if (other or old is None) and results.exists():
            results.unlink()
        atomic_write_text(json.dumps(config, indent=2) + "\n", config_path)

    def _remove_cells(self) -> int:
        count = 0
        for path in (self.path / "cells").glob("*.nc"):
            path.unlink()
            count += 1
        return count

    # -------------------------------------------------------------- contents

    def cell_path(self, task: cells.CellTask) -> Path:
        return self.path / "cells" / task.filename()

    def read(self, task: cells.CellTask) -> Any | None:
        """The verified finished cell of ``task``, or None."""
        return read_cell(self.cell_path(task), task)

    def write(self, task: cells.CellTask, ds: Any) -> None:
        """Save a finished cell (atomically, with its checksum)."""
        write_cell(ds, self.cell_path(task))

    def finish(self, combined: Any) -> None:
        """Write ``results.nc``."""
        write_atomic(combined, self.path / "results.nc")

    def __enter__(self) -> ResultFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
