"""The CPU's cores shared among the generations running at once in one process."""

import threading

import torch

from medusa_core.accel.threads import ThreadBudget


def test_one_generation_gets_every_core_two_share_them():
    before = torch.get_num_threads()
    budget = ThreadBudget(cores=2)
    try:
        with budget.generation() as share:
            assert torch.get_num_threads() == 2
            with budget.generation() as other:
                assert other() == 1 and share() == 1 and torch.get_num_threads() == 1
            assert share() == 2 and torch.get_num_threads() == 2
        assert budget.running == 0
    finally:
        torch.set_num_threads(before)


def test_generations_on_several_threads_never_oversubscribe():
    """torch's thread count is each thread's own: every generation sizes the thread it runs on."""
    budget = ThreadBudget(cores=4)
    seen, inside, lock = [], threading.Barrier(4), threading.Lock()

    def run() -> None:
        with budget.generation() as share:
            inside.wait()  # all four hold a share at once
            share()  # before the next step
            with lock:
                seen.append(torch.get_num_threads())
            inside.wait()

    workers = [threading.Thread(target=run) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == [1] * 4 and budget.running == 0
