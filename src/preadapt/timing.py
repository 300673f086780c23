"""Where a run's wall-clock time goes: seconds and calls per named stage (``Timings``).

A stage is a path: a stage opened inside another is named ``parent/name`` (``evaluation/L_un``), so
a function times its own parts without knowing who called it. Top-level stages (no ``/``) do not
overlap: a stage opened ``apart`` (a checkpoint's evaluation inside the training loop) is top-level
wherever it is opened, and the stages it interrupts do not count its time. ``rest(name)`` books the
time no top-level stage covered, so that the top-level stages add up to the wall time.

Layer 0, beside ``preadapt.registry``: every layer may take a ``Timings``. Functions accept
``timings: Timings | None = None`` and time into a fresh one when given None (nobody reads it).
These are measurements of one process on one machine, not estimates: no interval applies.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["Timings"]


@dataclass
class _Open:
    path: str
    start: float
    paused: float = 0.0  # seconds of apart stages opened inside it


class Timings:
    """Wall seconds and calls per stage, from ``clock`` (default ``time.perf_counter``).

    A clock that advances one second per reading shows the arithmetic:

    >>> ticks = iter(range(100))
    >>> timings = Timings(clock=lambda: float(next(ticks)))   # started at 0
    >>> timings.rest("start-up")                               # read at 1: 1 s that no stage covered
    >>> with timings.stage("pretraining"):                     # 2
    ...     with timings.stage("evaluation", apart=True):      # 3
    ...         with timings.stage("L_un"):                    # 4 .. 5: evaluation/L_un, 1 s
    ...             pass
    ...     pass                                               # evaluation ends at 6: 3 s, not pretraining's
    >>> for row in timings.rows():                             # pretraining ends at 7: 7 − 2 − 3 = 2 s
    ...     print(row)
    {'stage': 'start-up', 'seconds': 1.0, 'calls': 1}
    {'stage': 'pretraining', 'seconds': 2.0, 'calls': 1}
    {'stage': 'evaluation', 'seconds': 3.0, 'calls': 1}
    {'stage': 'evaluation/L_un', 'seconds': 1.0, 'calls': 1}
    >>> timings.elapsed()                                      # 8
    8.0
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = clock()
        self._seconds: dict[str, float] = {}  # in the order the stages were first opened
        self._calls: dict[str, int] = {}
        self._open: list[_Open] = []

    @contextmanager
    def stage(self, name: str, *, apart: bool = False) -> Iterator[None]:
        """Time the block as stage ``name`` (under the stage open around it, unless ``apart``).

        ``apart``: a top-level stage even when opened inside another, and every stage open around it
        leaves its time out (a checkpoint's evaluation, called back from inside the training loop, is
        evaluation, not training). The block's time is booked even when it raises.
        """
        path = name if apart or not self._open else f"{self._open[-1].path}/{name}"
        self._seconds.setdefault(path, 0.0)
        self._calls.setdefault(path, 0)
        interrupted = list(self._open) if apart else []
        frame = _Open(path, self.clock())
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.remove(frame)
            spent = self.clock() - frame.start - frame.paused
            self._seconds[path] += spent
            self._calls[path] += 1
            for other in interrupted:  # an apart stage inside this one already paused them for its own time
                other.paused += spent

    def rest(self, name: str) -> None:
        """Book as top-level stage ``name`` (one more call) the wall time since the start that no
        top-level stage covers: the time between stages. Called with no stage open."""
        covered = sum(seconds for path, seconds in self._seconds.items() if "/" not in path)
        self._seconds[name] = self._seconds.get(name, 0.0) + max(0.0, self.elapsed() - covered)
        self._calls[name] = self._calls.get(name, 0) + 1

    def elapsed(self) -> float:
        """Wall seconds since the Timings began."""
        return self.clock() - self.started

    def rows(self) -> list[dict[str, float | int | str]]:
        """One record per stage, ``{"stage", "seconds", "calls"}``, in the order first opened (a
        stage before the stages inside it); a stage open for the first time is not listed yet."""
        return [dict(stage=path, seconds=seconds, calls=self._calls[path]) for path, seconds in self._seconds.items()
                if self._calls[path]]
