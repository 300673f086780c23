"""Executors: where a sweep's runs compute. One interface, three backends:

- ``InProcess``: one run at a time in the driver's process;
- ``LocalPool``: a pool of N worker processes on this machine (``--workers N``);
- ``RayExecutor``: each run a Ray task (``--backend ray``; a local Ray, or a cluster with ``--address``),
  with ``num_cpus`` and ``num_gpus`` taken from the run's config.

Workers only compute: ``execute`` turns a config into a ``RunOutcome`` (plain, picklable data),
and the driver alone writes the store. The driver submits at most ``capacity`` runs at a time, so
the runs marked running in the store are the ones handed to workers (under Ray, possibly still
waiting for resources).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from preadapt.experiment.config import Config, ConfigError
from preadapt.experiment.run import describe_failure, pipeline, resolve_device, run_provenance, utc_now
from preadapt.experiment.testing import gate
from preadapt.timing import Timings


@dataclass(frozen=True)
class RunTask:
    """One run to compute: its id, its resolved config as JSON, torch's thread count (None: leave the
    process's own), and the file of the pretraining it shares with other runs of its sweep (None:
    train on its own; ``preadapt.experiment.run.pipeline``)."""

    run_id: str
    config_json: str
    threads: int | None = None
    pretrained: str | None = None


@dataclass
class RunOutcome:
    """What a worker returns: the run's status, the error of a failed run (with the step for a
    divergence), its provenance, its tidy rows (records of the ``results`` table) and where its time
    went (``Timings.rows()``: records of the ``timings`` table, without the run id)."""

    run_id: str
    status: str
    error: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    finished_at: str = ""
    seconds: float = 0.0
    timings: list[dict[str, Any]] = field(default_factory=list)


def execute(task: RunTask) -> RunOutcome:
    """Compute one run; never raises for the run's own errors (they are its outcome).

    >>> from preadapt.experiment.config import parse_config
    >>> config = parse_config({"name": "tiny", "world": {"kind": "gaussian", "classes": 3, "dim": 2},
    ...     "encoder": {"kind": "linear", "out_dim": 2}, "pretrain": {"tuples": 64, "epochs": 1, "batch_size": 64,
    ...     "checkpoints": [0]}, "evaluate": {"samples": 64, "mean_samples": 32,
    ...     "test_per_class": 8, "task_classes": [2], "top_r": [1], "probe_tasks": 2, "probe_shots": 4,
    ...     "probe_val": 4, "star_samples": 8, "bootstrap": 10}})
    >>> outcome = execute(RunTask("tiny-run", config.model_dump_json()))
    >>> outcome.status, outcome.error is not None, sorted({row["step"] for row in outcome.rows})
    ('finished', False, [0, 1])
    >>> [row["stage"] for row in outcome.timings if "/" not in row["stage"]]
    ['sampling', 'start-up', 'pretraining', 'evaluation', 'bound checks', 'other']
    """
    import torch

    gate(f"run-{task.run_id}")  # a test hook (experiment/testing.py): nothing unless PREADAPT_TEST_GATE is set
    start = time.perf_counter()
    timings = Timings()  # the worker's side of the run: start-up counts from here
    rows: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    try:
        config = Config.model_validate_json(task.config_json)
        threads = config.threads or task.threads
        if threads is not None:
            torch.set_num_threads(threads)
        device = resolve_device(config.device)
        provenance = run_provenance(config, device)
        status, error = pipeline(config, device, task.run_id, rows, {},
                                 pretrained=Path(task.pretrained) if task.pretrained else None, timings=timings)
    except Exception as failure:  # the run's own failure, recorded by the driver; the sweep goes on
        status, error = "failed", describe_failure(failure)
    timings.rest("other")
    return RunOutcome(task.run_id, status, error, provenance, rows, utc_now(), time.perf_counter() - start,
                      timings.rows())


LOST = "lost"
"""The status of a run whose worker died together with others' (a broken pool): not its own failure;
the driver runs it again once."""


def _failed(task: RunTask, reason: str) -> RunOutcome:
    return RunOutcome(task.run_id, "failed", reason, finished_at=utc_now())


class Executor(Protocol):
    """Runs tasks; the driver keeps at most ``capacity`` of them submitted."""

    capacity: int
    shares_registry: bool  # whether runs see components registered in the driver's process
    shares_files: bool  # whether runs see the driver's files (a pretraining kept for other runs)

    def submit(self, task: RunTask) -> None: ...

    def wait(self, timeout: float) -> list[RunOutcome]:
        """The outcomes of submitted tasks that completed (waits up to ``timeout`` seconds for one)."""

    def shutdown(self, cancel: bool = False) -> None:
        """Release the workers; ``cancel`` stops the runs still computing (Ctrl-C)."""


class InProcess:
    """Runs each task in the driver's own process, when the driver waits for it."""

    capacity = 1
    shares_registry = True  # components registered in this process are known to its runs
    shares_files = True

    def __init__(self) -> None:
        self._queue: list[RunTask] = []

    def submit(self, task: RunTask) -> None:
        self._queue.append(task)

    def wait(self, timeout: float) -> list[RunOutcome]:
        if not self._queue:
            return []
        import torch

        threads = torch.get_num_threads()  # a run's `threads` must not leak into the next one's
        try:
            return [execute(self._queue.pop(0))]
        finally:
            torch.set_num_threads(threads)

    def shutdown(self, cancel: bool = False) -> None:
        self._queue.clear()


def _watch_parent(parent: int) -> None:
    """A pool worker whose driver died (SIGKILL, a lost terminal) exits instead of lingering."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _worker_start(parent: int) -> None:
    # Ctrl-C is the driver's to handle: it stops the workers itself and says how to resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


class LocalPool:
    """A pool of ``workers`` processes (started with spawn: no state is inherited from the driver).

    Each run uses ``threads`` torch threads: its config's ``threads``, else the cores shared out
    among the workers. A worker that dies (killed, out of memory) fails the runs it held, and a
    fresh pool takes the next ones.
    """

    shares_files = True

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"--workers: got {workers}; allowed: 1 or more")
        self.capacity = workers
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
        self._pool: futures.ProcessPoolExecutor | None = None
        self._running: dict[futures.Future, RunTask] = {}

    def _executor(self) -> futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = futures.ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_worker_start, initargs=(os.getpid(),))
        return self._pool

    def submit(self, task: RunTask) -> None:
        task = RunTask(task.run_id, task.config_json, task.threads or self.threads)
        try:
            future = self._executor().submit(execute, task)
        except BrokenProcessPool:
            self._pool = None
            future = self._executor().submit(execute, task)
        self._running[future] = task

    def wait(self, timeout: float) -> list[RunOutcome]:
        if not self._running:
            return []
        done, _ = futures.wait(list(self._running), timeout=timeout, return_when=futures.FIRST_COMPLETED)
        outcomes = []
        for future in done:
            task = self._running.pop(future)
            try:
                outcomes.append(future.result())
            except BrokenProcessPool as broken:
                # one dead worker breaks the whole pool: every run in flight comes back "lost"
                # (not failed), and the driver submits each again once, to a fresh pool
                self._pool = None
                outcomes.append(RunOutcome(task.run_id, LOST, f"worker process died ({broken})", finished_at=utc_now()))
            except Exception as failure:  # e.g. an outcome that could not be pickled back
                outcomes.append(_failed(task, f"{type(failure).__name__}: {failure}"))
        return outcomes

    def shutdown(self, cancel: bool = False) -> None:
        if self._pool is None:
            return
        if cancel:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
        self._pool = None
        self._running.clear()


def ray_resources(config_json: str) -> dict[str, float]:
    """A run's Ray resources from its config: ``num_cpus`` = ``threads`` (1 when null) and
    ``num_gpus`` = 1 for ``device: cuda``, else 0 (Ray hides the GPUs from a task that asks for
    none, so ``device: auto`` runs on the CPU there).

    >>> ray_resources('{"threads": 4, "device": "cuda"}')
    {'num_cpus': 4, 'num_gpus': 1}
    """
    import json

    config = json.loads(config_json)
    return {"num_cpus": config.get("threads") or 1, "num_gpus": 1 if config.get("device") == "cuda" else 0}


class RayExecutor:
    """Each run a Ray task. ``address=None`` starts a local Ray (dashboard off) with ``workers``
    CPUs (all cores when None); an address joins a running cluster (``ray start --head``), where
    ``workers`` caps the runs in flight (default: the cluster's CPUs)."""

    shares_registry = False
    shares_files = False  # a cluster's nodes need not see the driver's disk: each run trains its own

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray: Ray is not installed; pip install 'preadapt[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address is None:
                options["num_cpus"] = workers or os.cpu_count() or 1
            try:
                ray.init(address=address, **options)
            except ConnectionError as error:
                raise ConfigError(f"--address: cannot join a Ray cluster at {address!r} ({error})") from None
        self.capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(execute)
        self._running: dict[Any, RunTask] = {}

    def submit(self, task: RunTask) -> None:
        resources = ray_resources(task.config_json)
        task = RunTask(task.run_id, task.config_json, task.threads or int(resources["num_cpus"]))
        self._running[self._remote.options(**resources, max_retries=0).remote(task)] = task

    def wait(self, timeout: float) -> list[RunOutcome]:
        if not self._running:
            return []
        done, _ = self._ray.wait(list(self._running), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in done:
            task = self._running.pop(ref)
            try:
                outcomes.append(self._ray.get(ref))
            except Exception as failure:  # the worker died, or the task could not run
                outcomes.append(_failed(task, f"Ray task failed: {type(failure).__name__}: {failure}"))
        return outcomes

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._started:
            self._ray.shutdown()


def make_executor(backend: str, workers: int | None, address: str | None = None) -> Executor:
    """``local`` with one worker: in-process; more: a process pool. ``ray``: a Ray executor."""
    if backend == "local":
        if address is not None:
            raise ConfigError("--address: only for --backend ray")
        workers = 1 if workers is None else workers
        if workers < 1:
            raise ConfigError(f"--workers: got {workers}; allowed: 1 or more")
        return InProcess() if workers == 1 else LocalPool(workers)
    if backend == "ray":
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers: got {workers}; allowed: 1 or more")
        return RayExecutor(address, workers)
    raise ConfigError(f"--backend: got {backend!r}; allowed: local, ray")
