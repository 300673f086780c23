"""``preadapt`` run in the test's own process: what a subprocess would give, without its start-up."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import traceback


def cli(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``preadapt ARGS`` run in this process, through the console script's own entry point
    (``preadapt.cli.main`` with ``sys.argv``), in ``cwd`` with COLUMNS=200 and ``env`` added to the
    environment: what a subprocess would give (the exit status, stdout, stderr), without a fresh
    interpreter's 3 s of imports.

    For the tests whose subject is what the command says and writes (exit 2 with one line and nothing
    written, a dry run's config, an export, a resumed sweep); the tests whose subject is the process
    itself (signals, SIGKILL, workers that outlive a driver) start one. As the interpreter would, an
    exception that escapes ``main`` gives status 1 and its traceback on stderr. What a command sets in
    the process (the signal handlers, torch's thread count, the working directory, the environment,
    ``sys.argv``) is restored after it."""
    import torch

    from preadapt import cli as module

    out, err = io.StringIO(), io.StringIO()
    env = {"COLUMNS": "200", **(env or {})}  # as test_cli.preadapt gives its subprocesses
    saved = (os.getcwd(), {key: os.environ.get(key) for key in env}, list(sys.argv), torch.get_num_threads(),
             {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)})
    widths = [(console, console._width) for console in (module.console, module.errors)]
    try:
        os.chdir(cwd)
        os.environ.update(env)
        for console, _ in widths:  # as in a fresh process: the width from the environment's COLUMNS
            console._width = None
        sys.argv = ["preadapt", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main()
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        cwd_before, environ, argv, threads, handlers = saved
        os.chdir(cwd_before)
        for key, value in environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.argv = argv
        torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for console, width in widths:
            console._width = width
    return subprocess.CompletedProcess(["preadapt", *args], code, out.getvalue(), err.getvalue())
