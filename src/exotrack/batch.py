"""Running a batch of samples so that one that dies costs that sample only.

Each sample is analysed in a child process of its own, forked from the job's process (the imaging
libraries are loaded once), so that a sample the kernel kills for its memory, or that dies in a
library's C code, ends as that sample's status while the batch goes on; and each sample's memory
goes back to the system when it ends. A job killed as a whole (a wall-time limit) leaves a
progress file; when Snakemake retries the job, the sample it was killed in is not analysed
again but recorded as killed, and the others are.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

KILLED = "analysis did not finish (killed: out of memory or time limit?)"


def run_isolated(task) -> str | None:
    """Run ``task()`` in a forked child process; ``None`` if it finished, else why it did not."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            task()
        except BaseException:
            logging.getLogger(__name__).exception("the analysis raised")
            code = 1
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGKILL:
            return KILLED
        return f"analysis did not finish (killed by {signal.Signals(number).name})"
    code = os.WEXITSTATUS(status)
    return None if code == 0 else f"analysis did not finish (it stopped with exit code {code}; see the log)"


def run_batch(samples: list[str], analyse, fail, *, progress, retry: bool) -> None:
    """Analyse ``samples`` one after another, each by ``analyse(i)`` in a child of its own.

    Parameters
    ----------
    samples : list of str
        Sample ids, in the order to analyse them.
    analyse : callable
        ``analyse(i)`` analyses sample ``i`` and writes all its outputs.
    fail : callable
        ``fail(i, reason)`` writes sample ``i``'s outputs for a failure, with ``reason`` as status.
    progress : path-like
        The batch's progress file (not an output: it must survive a failed job).
    retry : bool
        Whether this run retries a job that failed: samples that the failed run started and never
        finished (it was killed in them) are recorded as killed instead of analysed again.
    """
    progress = Path(progress)
    lost = _unfinished(progress) if retry else set()
    progress.parent.mkdir(parents=True, exist_ok=True)
    with open(progress, "w") as fh:
        for i, sample in enumerate(samples):
            if sample in lost:
                logging.getLogger(__name__).error("sample %s: the previous attempt was killed while analysing it; "
                                                  "not analysed again", sample)
                _note(fh, "lost", sample)
                fail(i, KILLED)
                continue
            _note(fh, "start", sample)
            reason = run_isolated(lambda: analyse(i))
            if reason is not None:
                fail(i, reason)
            _note(fh, "end", sample)
    progress.unlink()


def _note(fh, event: str, sample: str) -> None:
    fh.write(f"{event}\t{sample}\n")
    fh.flush()
    os.fsync(fh.fileno())


def _unfinished(progress: Path) -> set[str]:
    """Samples a killed run was analysing, or had already found lost."""
    if not progress.exists():
        return set()
    started, ended = set(), set()
    for line in progress.read_text().splitlines():
        event, _, sample = line.partition("\t")
        if event in ("start", "lost"):
            started.add(sample)
        if event == "end":
            ended.add(sample)
    return started - ended
