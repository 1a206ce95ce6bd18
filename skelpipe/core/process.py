"""Worker processes that die with the process that started them."""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Call first thing in a worker started by process ``parent``: when the parent dies, however
    it ends (SIGTERM, SIGKILL, a crash), the kernel sends this worker SIGKILL (Linux
    ``PR_SET_PDEATHSIG``), so that no orphan goes on computing for nobody. What the worker had
    finished stays on disk for a rerun, as after any kill."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown ends the workers
        return
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
