"""Stopping ``msd-dagster load`` at any moment, and a worker never between a commit and its records.

**The command.** From its first line to its last, SIGINT and SIGTERM are blocked in every thread
of the command and received by one thread of its own (:class:`StopRequests`, ``sigwait``). No
handler of Dagster or of a library ever sees them (Dagster swaps the handlers around resource
set-up and turns the signals into exceptions that its own code may catch and forget), and no
exception lands in a finalizer. While no worker runs (start-up, the summary) the command ends at
once; while workers run, the runner acts on the request at its next check point.

**A worker.** The runner stops a worker with :data:`WORKER_STOP_SIGNAL`. Between the commit of a
folder's transaction and the last record of that folder (its materializations and check results)
the worker finishes those records first (:func:`committing` ... :func:`commit_recorded`), so that
a folder whose rows are committed is never reported or recorded as not loaded.

``MSD_TEST_PAUSE_AT`` (tests only) holds the command or a worker at one named point until a stop
arrives, so that a test can send its signal inside a window that is otherwise a few milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WORKER_STOP_SIGNAL = signal.SIGUSR1
_WAKE = signal.SIGUSR2  # ends the receiving thread when the command is done
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
PAUSE_ENV = "MSD_TEST_PAUSE_AT"
PAUSE_LIMIT_SECONDS = 60.0


class StopRequests:
    """Receives the command's SIGINT and SIGTERM in a thread of its own.

    ``on_idle_stop(signal_name)`` is called (in that thread) when a stop arrives while no
    worker runs: it prints what was done and ends the process. While :meth:`supervising`, the
    request is only noted, for the runner's check points (:attr:`signal_name`).
    """

    def __init__(self, on_idle_stop: Callable[[str], None]) -> None:
        self.on_idle_stop = on_idle_stop
        self.signal_name: str | None = None
        self._lock = threading.Lock()
        self._supervised = 0
        self._thread: threading.Thread | None = None
        self._previous_mask: set[signal.Signals] = set()

    def start(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are the main thread's business; nothing to receive here
        self._previous_mask = signal.pthread_sigmask(
            signal.SIG_BLOCK, {*STOP_SIGNALS, _WAKE, WORKER_STOP_SIGNAL}
        )
        self._thread = threading.Thread(target=self._receive, name="msd-stop", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        signal.pthread_kill(self._thread.ident, _WAKE)
        self._thread.join(5)
        self._thread = None
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)

    def _receive(self) -> None:
        while True:
            signum = signal.sigwait({*STOP_SIGNALS, _WAKE})
            if signum == _WAKE:
                return
            with self._lock:
                if self.signal_name is None:
                    self.signal_name = signal.Signals(signum).name
                if not self._supervised:
                    self.on_idle_stop(self.signal_name)

    @contextmanager
    def supervising(self) -> Iterator[None]:
        """While workers may run: a stop is left to the runner's check points."""
        with self._lock:
            self._supervised += 1
        try:
            yield  # an exception (e.g. the runner's LoadInterrupted) is the caller's to report
        finally:
            with self._lock:
                self._supervised -= 1
                late = self.signal_name if not self._supervised else None
        if late is not None:  # asked for while the runner was returning: act on it here
            self.on_idle_stop(late)


def exit_code(signal_name: str) -> int:
    return EXIT_CODES.get(signal_name, 1)


# -- a worker


_worker = {"committing": False, "stop_pending": False}


def _worker_stop(_signum: int, _frame: object) -> None:
    if _worker["committing"]:
        _worker["stop_pending"] = True
        return
    _exit_worker()


def _exit_worker() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # the folder in progress is rolled back by the database


def install_worker_handler() -> None:
    """In a worker process: :data:`WORKER_STOP_SIGNAL` ends it at once, except between a
    commit and its records, where it ends it right after them. The command's blocked signals
    are unblocked (a forked process inherits the mask)."""
    signal.signal(WORKER_STOP_SIGNAL, _worker_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*STOP_SIGNALS, _WAKE, WORKER_STOP_SIGNAL})


def committing() -> None:
    """Called last before a folder's transaction commits: a stop now waits for its records."""
    _worker["committing"] = True


def commit_recorded() -> None:
    """The folder's records are stored (or its load failed): a stop that waited acts now."""
    _worker["committing"] = False
    if _worker["stop_pending"]:
        _exit_worker()


@contextmanager
def folder_commit_window() -> Iterator[None]:
    """Around one folder's load and records: whatever happens, the window closes at the end."""
    try:
        yield
    finally:
        commit_recorded()


def pause_at(point: str, detail: str = "") -> None:
    """Tests only: when ``MSD_TEST_PAUSE_AT`` names ``point``, say so on stderr and wait
    until a stop request arrives (or ``PAUSE_LIMIT_SECONDS``)."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    print(f"paused at {point}{' ' + detail if detail else ''}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if _worker["stop_pending"] or _pending_stop_in_command():
            return
        time.sleep(0.02)


def _pending_stop_in_command() -> bool:
    return bool(_command_requests and _command_requests[0].signal_name)


_command_requests: list[StopRequests] = []


def register(requests: StopRequests) -> None:
    """The command's :class:`StopRequests`, for :func:`pause_at`."""
    _command_requests[:] = [requests]
