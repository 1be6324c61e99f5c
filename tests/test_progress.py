"""Progress of training rows: the board keeps each row's latest report, the view draws bars on a
terminal and periodic log lines elsewhere, and a real ``train`` run shows its iterations. And
``apply``'s Ray Data progress: bars only when stderr, where Ray draws them, is a terminal."""

from __future__ import annotations

import builtins
import io
import logging
import re
import sys
from pathlib import Path

import pytest
import ray

from pipeline import progress
from pipeline.progress import ProgressView, RowProgress, RowReporter, describe, start_board
from pipeline.ray_runtime import _CommandStdout


def test_a_row_line_gives_iterations_rate_and_time_left() -> None:
    row = RowProgress(done=120, total=300, first_seen=100.0, first_done=20, updated=150.0)
    assert row.rate == pytest.approx(2.0) and row.seconds_left == pytest.approx(90.0)
    assert describe("sunset", row) == "sunset: 120/300 iterations (40 %), 2.0 it/s, about 1 min 30 s left"
    first = RowProgress(done=1, total=300, first_seen=100.0, first_done=1, updated=100.0)
    assert first.rate is None and describe("sunset", first) == "sunset: 1/300 iterations (0 %)"


def test_the_board_keeps_the_latest_report_and_restarts_a_retried_row(ray_session: None) -> None:
    board = start_board()
    try:
        for done in (1, 5, 9):
            ray.get(board.report.remote("sunset", done, 10))
        row = ray.get(board.snapshot.remote())["sunset"]
        assert (row.done, row.total, row.first_done) == (9, 10, 1) and row.updated >= row.first_seen
        ray.get(board.report.remote("sunset", 2, 10))  # the task was retried and started over
        assert ray.get(board.snapshot.remote())["sunset"].first_done == 2
    finally:
        ray.kill(board)


def test_the_reporter_throttles_but_always_sends_the_last_iteration() -> None:
    sent: list[tuple[str, int, int]] = []

    class Board:
        class report:  # noqa: N801 -- stands in for an actor method
            @staticmethod
            def remote(name: str, done: int, total: int) -> None:
                sent.append((name, done, total))

    reporter = RowReporter(Board(), "lake")
    for done in range(1, 301):
        reporter(done, 300)
    assert sent[0] == ("lake", 1, 300) and sent[-1] == ("lake", 300, 300) and len(sent) < 10


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_view_draws_bars_on_a_terminal_and_log_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rows = {"sunset": RowProgress(done=150, total=300, first_seen=0.0, first_done=0, updated=50.0)}
    terminal = _Terminal()
    view = ProgressView(terminal)
    view.show(rows, finished=set())
    view.close()
    assert re.search(r"sunset: +50%.*150/300", terminal.getvalue()) and not caplog.records
    view = ProgressView(io.StringIO())
    view.show(rows, finished=set())
    view.show(rows, finished=set())  # within LOG_EVERY_S: no second line
    view.show(rows, finished={"sunset"})
    assert [r.getMessage() for r in caplog.records] == [describe("sunset", rows["sunset"])]


def test_apply_draws_ray_datas_bars_only_when_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data chooses bars or periodic log lines by ``sys.stdout.isatty()`` and draws either on
    stderr. Found when ``apply 2> apply.log`` from a terminal wrote every bar redraw (carriage
    returns, cursor moves) into the log; ``apply --json > out.json`` lost its bars the same way."""
    from ray.data import DataContext
    from ray.data._internal.progress import get_progress_manager  # where Ray 2.60 makes that choice
    from ray.data._internal.progress.logging_progress import LoggingExecutionProgressManager
    from ray.experimental import tqdm_ray

    # Ray's first bar manager replaces builtins.print for the whole process: undo it after the test
    monkeypatch.setattr(builtins, "print", builtins.print)
    monkeypatch.setattr(tqdm_ray, "_manager", None)

    def logs_lines(stdout: io.StringIO, stderr: io.StringIO) -> bool:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", _CommandStdout(stdout, stderr))
            manager = get_progress_manager(DataContext.get_current(), "dataset", {}, False)
        manager.close_with_finishing_description("done", True)
        return isinstance(manager, LoggingExecutionProgressManager)

    assert logs_lines(stdout=_Terminal(), stderr=io.StringIO())
    assert not logs_lines(stdout=io.StringIO(), stderr=_Terminal())
    assert _CommandStdout(_Terminal(), io.StringIO()).isatty()  # the command's own question is about stdout


def test_quiet_logging_shows_no_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    terminal = _Terminal()
    ProgressView(terminal).show({"x": RowProgress(1, 2, 0.0, 0, 1.0)}, finished=set())
    assert terminal.getvalue() == "" and not caplog.records


def test_train_logs_each_rows_iterations_while_it_trains(
    ray_session: None, tmp_path: Path, local_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_train_cli import train, write_pairs
    from tests.photos import content, open_rgb, style

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    c, s = tmp_path / "c.png", tmp_path / "s.png"
    open_rgb(content(1), 64).save(c)
    open_rgb(style(1), 64).save(s)
    pairs = write_pairs(str(tmp_path / "pairs.parquet"), [(str(c), str(s), "sunset")])
    out = train("--pairs", pairs, "--store", local_store, "--preset", "lite", "--iterations", "40", "--crop", "32", "--loss-net", "random")
    assert out.exit_code == 0, out.output
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert lines and all(re.match(r"sunset: \d+/40 iterations", line) for line in lines), lines
