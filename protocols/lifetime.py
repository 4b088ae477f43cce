"""Child processes that die with the process that started them, even when it is killed with SIGKILL.

A service that is killed (``kill -9``, the OOM killer, a crashed container runtime) runs no clean-up code, so a
worker process it spawned would live on as an orphan: holding a bank's model or a PSI key in memory, a CPU, and
an open database file. Two pieces keep every spawned worker's life inside its parent's:

* :func:`die_with_parent`, called first thing in the child (its entry point or a pool's initializer), asks the
  Linux kernel to send the child ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and exits at
  once if the parent already died before the request took effect (the race between ``fork`` and ``prctl``).
  Where ``prctl`` does not exist (not Linux) a daemon thread in the child polls ``getppid()`` instead; it
  cannot interrupt native code that holds the GIL, the kernel signal can.
* :func:`start_process` starts a ``multiprocessing`` process from one long-lived thread of the parent. The
  kernel's notion of "the parent" for ``PR_SET_PDEATHSIG`` is the *thread* that forked the child: a warm
  worker started from a short-lived request or job thread would be killed when that thread ended. Starting
  every long-lived child from a thread that lives as long as the process ties the child to the process.

``multiprocessing``'s resource tracker (started with the first spawned process) needs nothing of its own: it
exits when the last process holding its pipe — the parent and its spawned children — is gone.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Final

__all__ = ["PR_SET_PDEATHSIG", "die_with_parent", "start_process"]

PR_SET_PDEATHSIG: Final = 1
"""``prctl`` option: the signal the calling process gets when its parent (thread) dies (linux/prctl.h)."""
_POLL_S: Final = 0.5


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a Linux without a loadable libc
        return False
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:  # pragma: no cover - the kernel refused
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    return True


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover - the fallback where prctl is missing
    while os.getppid() == parent_pid:
        time.sleep(_POLL_S)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """In a child process: be killed (``SIGKILL``) when the parent ``parent_pid`` dies; exit now if it has.

    Call it before anything else in the child. ``parent_pid`` is the parent's ``os.getpid()``, passed in the
    child's arguments.
    """
    if isinstance(parent_pid, bool) or not isinstance(parent_pid, int) or parent_pid < 1:
        raise TypeError(f"parent_pid must be a process id, got {parent_pid!r}")
    kernel = _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect: nobody would reap us
        os._exit(1)
    if not kernel:  # pragma: no cover - not Linux
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="die-with-parent", daemon=True
        ).start()


class _Starter:
    """One daemon thread per process that starts child processes, so that their parent thread (for
    ``PR_SET_PDEATHSIG``) lives as long as the process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.requests: queue.SimpleQueue[tuple[BaseProcess, threading.Event, list[BaseException]]] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._serve, name="pps-process-starter", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            process, done, error = self.requests.get()
            try:
                process.start()
            except BaseException as exc:
                error.append(exc)
            finally:
                done.set()


_starter: _Starter | None = None
_starter_lock = threading.Lock()


def start_process(process: BaseProcess) -> None:
    """``process.start()``, run on this process's long-lived starter thread; returns when it has started.

    Use it for every child that should outlive the thread that asks for it (a warm worker started by a job
    thread) together with :func:`die_with_parent` in the child. Exceptions of ``start()`` are re-raised here.
    """
    global _starter
    with _starter_lock:
        if _starter is None or _starter.pid != os.getpid() or not _starter.thread.is_alive():
            _starter = _Starter()  # first use, or a forked copy of this process (threads are not inherited)
        starter = _starter
    done = threading.Event()
    error: list[BaseException] = []
    starter.requests.put((process, done, error))
    done.wait()
    if error:
        raise error[0]
