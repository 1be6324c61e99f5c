"""Progress of long work, reported by Ray tasks and shown by the driver while it waits.

Training a row takes minutes; a driver that prints nothing until the first row ends looks hung.
Each row's task reports its iterations to one small actor (:class:`ProgressBoard`, no CPU) through
a :class:`RowReporter` that sends at most one report a second, fire and forget, so progress can
neither slow a row nor fail it. The driver polls the board between results and draws it with a
:class:`ProgressView`: tqdm bars on a terminal; on anything else (a pod's log, CI) a log line per
running row every ``LOG_EVERY_S`` seconds, with iterations, rate and time left.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import ray
from tqdm import tqdm

__all__ = ["LOG_EVERY_S", "ProgressBoard", "ProgressView", "RowProgress", "RowReporter", "describe", "start_board"]

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0  # without a terminal: one line per running row this often
_REPORT_EVERY_S = 1.0  # a task sends at most one report this often (and always its last)


@dataclass(frozen=True)
class RowProgress:
    """Where one row stands, as its task last reported it (times on the board's clock)."""

    done: int
    total: int
    first_seen: float  # when the board got the row's first report
    first_done: int  # iterations done at that report
    updated: float

    @property
    def rate(self) -> float | None:
        """Iterations a second since the first report; None until there are two reports apart."""
        elapsed = self.updated - self.first_seen
        return (self.done - self.first_done) / elapsed if elapsed > 0 and self.done > self.first_done else None

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate else None


class _Board:
    """Actor body: the latest report of every row."""

    def __init__(self) -> None:
        self._rows: dict[str, RowProgress] = {}

    def report(self, name: str, done: int, total: int) -> None:
        now = time.time()
        seen = self._rows.get(name)
        if seen is None or done < seen.done:  # new, or a retried task starting over
            self._rows[name] = RowProgress(done, total, now, done, now)
        else:
            self._rows[name] = RowProgress(done, total, seen.first_seen, seen.first_done, now)

    def snapshot(self) -> dict[str, RowProgress]:
        return dict(self._rows)


ProgressBoard = ray.remote(num_cpus=0, max_restarts=0)(_Board)


def start_board() -> Any:
    """A board for one driver's rows (dies with the driver)."""
    return ProgressBoard.remote()


class RowReporter:
    """The library's progress callback inside a row's task: forwards to the board, throttled."""

    def __init__(self, board: Any, name: str) -> None:
        self._board, self._name = board, name
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < _REPORT_EVERY_S:
            return
        self._last = now
        try:
            self._board.report.remote(self._name, done, total)
        except Exception:  # noqa: BLE001 -- progress must never fail the row
            log.debug("progress report for %s failed", self._name, exc_info=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def describe(name: str, row: RowProgress) -> str:
    """One log line for a row: ``sunset: 120/300 iterations (40 %), 2.1 it/s, about 1 min 26 s left``."""
    text = f"{name}: {row.done}/{row.total} iterations ({100 * row.done // max(row.total, 1)} %)"
    if row.rate is not None and row.seconds_left is not None:
        text += f", {row.rate:.1f} it/s, about {_duration(row.seconds_left)} left"
    return text


class ProgressView:
    """Draws a board's snapshots: bars on a terminal, periodic log lines elsewhere, nothing when
    logging is quieter than INFO (``-q``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = log.isEnabledFor(logging.INFO)
        self._bars = self._enabled and self._stream.isatty()
        self._open: dict[str, tqdm] = {}
        self._logged: dict[str, float] = {}

    def show(self, rows: dict[str, RowProgress], finished: set[str]) -> None:
        """Draw the rows still running; ``finished`` rows are closed (their result is logged)."""
        if not self._enabled:
            return
        for name in finished & set(self._open):
            self._open.pop(name).close()
        for name, row in rows.items():
            if name in finished:
                continue
            if self._bars:
                self._draw_bar(name, row)
            elif time.monotonic() - self._logged.get(name, float("-inf")) >= LOG_EVERY_S:
                self._logged[name] = time.monotonic()
                log.info("%s", describe(name, row))

    def _draw_bar(self, name: str, row: RowProgress) -> None:
        bar = self._open.get(name)
        if bar is None:
            bar = self._open[name] = tqdm(total=row.total, desc=name, unit="it", file=self._stream, leave=False)
        bar.update(row.done - bar.n)
        bar.refresh()  # the driver polls once a second: draw every poll, not tqdm's own throttle

    def close(self) -> None:
        for bar in self._open.values():
            bar.close()
        self._open.clear()
