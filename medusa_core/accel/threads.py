"""Sharing the CPU's cores among the generations that run at once in one process.

Every thread that runs torch ops leads its own OpenMP team, sized by that thread's own setting
(torch copies the process-wide count into a thread once, on its first op, and
`torch.set_num_threads` then changes only the calling thread and later newcomers). Two generations
with two threads each on two cores put four busy threads on two cores, and OpenMP's idle threads
spin while they wait for work. A budget counts the generations running and gives each
cores // running threads: a generation calls `share()` on the thread that runs its next step (a
streamed generation may move between threads), so one alone gets every core and two get one
each; with one thread a step starts no team at all, so nothing spins.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

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

    def share(self) -> int:
        """Size the calling thread's torch threads to its share now; returns it."""
        threads = self.threads_for(self.running)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    @contextmanager
    def generation(self) -> Iterator[Callable[[], int]]:
        """Count one generation as running; yields `share`, to call before each of its steps
        (it is called once on entry)."""
        with self._lock:
            self.running += 1
        try:
            self.share()
            yield self.share
        finally:
            with self._lock:
                self.running -= 1
