"""Progress of a benchmark run on stderr: bars on a terminal, one plain line per cell in a log.

``progress=True`` (``"auto"``) picks bars when stderr is a terminal and lines otherwise, so
that a log file never fills with the escape sequences of redrawn bars.  A failed cell is
reported in every mode, ``progress=False`` included.  A line reads::

    bench ks: cell 3/12 dps @ sparse done in 12.4 s; elapsed 40 s, ETA 2 min 10 s
    bench ks: cell 4/12 dps @ random FAILED in 0.3 s (ValueError: ...); elapsed 41 s, ...

The ETA is the mean wall time per cell finished in this run times the cells left (which
also holds with parallel workers, since it is measured on the driver's clock).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["PROGRESS_MODES", "Progress", "progress_mode"]

PROGRESS_MODES = ("auto", "bars", "lines", "none")


def progress_mode(progress: bool | str, stream: TextIO | None = None) -> str:
    """``"bars"``, ``"lines"`` or ``"none"`` for ``progress`` (True/``"auto"``: bars on a
    terminal, lines otherwise; False: none)."""
    if progress is True:
        progress = "auto"
    elif progress is False:
        progress = "none"
    if progress not in PROGRESS_MODES:
        raise ValueError(
            f"progress must be True, False or one of {PROGRESS_MODES}; got {progress!r}"
        )
    if progress == "auto":
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return "bars" if callable(isatty) and isatty() else "lines"
    return str(progress)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """Report finished cells of a run of ``total`` cells, ``done_before`` of them reused.

    Args:
        total: cells of the run.
        done_before: cells reused from the out folder.
        title: e.g. ``"bench ks"``.
        mode: ``"bars"``, ``"lines"`` or ``"none"`` (see :func:`progress_mode`).
    """

    def __init__(self, total: int, done_before: int, title: str, mode: str) -> None:
        self.total = total
        self.done = done_before
        self.todo = total - done_before
        self.title = title
        self.mode = mode
        self.finished = 0
        self.started = time.perf_counter()
        self.bar = None
        if mode == "bars":
            self.bar = tqdm(
                total=total, initial=done_before, desc=title, unit="cell", file=sys.stderr
            )
        elif mode == "lines" and done_before:
            self._print(f"{title}: {done_before} of {total} cells reused from the out folder")

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def cell_done(self, label: str, regime: str, ds: Any) -> None:
        """One more cell finished (``ds`` its dataset: failure and time are read from it)."""
        self.done += 1
        self.finished += 1
        failure = str(ds["failure"].values.ravel()[0]) if "failure" in ds else ""
        if self.mode != "lines":
            if failure:  # a failure is reported whatever the mode
                line = f"{self.title}: cell {label} @ {regime} FAILED ({failure})"
                if self.bar is not None:
                    tqdm.write(line, file=sys.stderr)
                else:
                    self._print(line)
            if self.bar is not None:
                self.bar.set_postfix_str(f"{label} @ {regime}", refresh=False)
                self.bar.update(1)
            return
        seconds = float(ds.attrs.get("cell_seconds", float("nan")))
        elapsed = time.perf_counter() - self.started
        left = self.todo - self.finished
        eta = elapsed / self.finished * left
        status = f"FAILED in {seconds:.1f} s ({failure})" if failure else f"done in {seconds:.1f} s"
        self._print(
            f"{self.title}: cell {self.done}/{self.total} {label} @ {regime} {status}; "
            f"elapsed {_duration(elapsed)}, ETA {_duration(eta)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
