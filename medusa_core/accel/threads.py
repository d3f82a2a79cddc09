"""Sharing the CPU's cores among the generations that run at once in one process.

torch's intra-op threads are one process-wide setting, and every thread that runs torch ops leads
its own OpenMP team. Two generations with two threads each on two cores put four busy threads on
two cores, and OpenMP's idle threads spin while they wait for work, so each generation slows
several-fold. A budget sets the process's thread count to cores // generations running whenever a
generation starts or ends: one generation alone gets every core, two get one core each, and with
one thread a generation starts no team at all, so nothing spins.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ThreadBudget:
    def __init__(self, cores: int | None = None) -> None:
        self.cores = max(1, cores or usable_cores())
        self.running = 0
        self._lock = threading.Lock()

    def threads_for(self, running: int) -> int:
        return max(1, self.cores // max(1, running))

    def _set(self, delta: int) -> None:
        with self._lock:
            self.running += delta
            torch.set_num_threads(self.threads_for(self.running))

    @contextmanager
    def generation(self) -> Iterator[int]:
        """Hold a share of the cores while one generation runs; yields the threads it starts with."""
        self._set(+1)
        try:
            yield torch.get_num_threads()
        finally:
            self._set(-1)
