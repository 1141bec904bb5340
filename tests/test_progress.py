"""Milestones of long work reach the log."""

import logging

from exotrack.progress import steps


def test_milestones_are_logged_each_tenth_and_at_the_end(caplog):
    with caplog.at_level(logging.INFO, logger="exotrack.progress"):
        assert list(steps(range(37), total=37, what="tiles analysed")) == list(range(37))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0].startswith("tiles analysed: 4/37 (11%)") and lines[-1].startswith("tiles analysed: 37/37 (100%)")


def test_short_work_logs_each_step_once(caplog):
    with caplog.at_level(logging.INFO, logger="exotrack.progress"):
        list(steps(["a", "b"], total=2, what="samples of the batch done"))
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "samples of the batch done: 1/2", "samples of the batch done: 2/2"]
