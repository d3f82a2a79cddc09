"""optimizer tune on a real PostgreSQL server: two workers share one study, one is killed mid-trial
and resumed. The server is Debian's `postgresql` package (scripts/setup.sh installs it), started in
a temporary folder for the session; under CI a missing or failing server fails the test."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from medusa_core.spec.trees import load_tree_with_lookup
from optimizer.search import open_storage
from tests.test_optimizer_tune import PROMPTS, TINY

REPO = Path(__file__).resolve().parent.parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Enough trials that the second worker is still at work when the test kills it mid-trial (with 8,
# three fast workers once finished the study first on a loaded machine).
TRIALS = 12


def postgres_bin() -> Path | None:
    """The folder of initdb, pg_ctl and createdb: pg_ctl's real folder when it is on PATH (links
    resolved), else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name))
    for pg_ctl in ([Path(on_path).resolve()] if on_path else []) + [Path(p) for p in reversed(found)]:
        if all((pg_ctl.parent / tool).is_file() for tool in ("initdb", "createdb")):
            return pg_ctl.parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is needed under CI: {reason}")
    pytest.skip(f"PostgreSQL not available ({reason}); scripts/setup.sh installs Debian's postgresql")


def as_server_user(command: list[str], user: str | None) -> list[str]:
    # PostgreSQL refuses to run as root: as root, run it as the package's own `postgres` user.
    return ["runuser", "-u", user, "--", *command] if user else command


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a unix socket in a temporary folder; yields an SQLAlchemy URL."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable("no initdb/pg_ctl on PATH or under /usr/lib/postgresql")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            unavailable("running as root and there is no `postgres` user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="medusa-pg-"))
    if user:
        shutil.chown(root, user)
    data, port = root / "data", free_port()
    run = lambda *cmd: subprocess.run(as_server_user([str(bin_dir / cmd[0]), *cmd[1:]], user),  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    init = run("initdb", "-D", str(data), "-A", "trust", "-U", "tune", "--no-sync", "-E", "UTF8")
    if init.returncode != 0:
        unavailable(f"initdb failed: {init.stderr.strip()}")
    options = f"-k {root} -p {port} -c listen_addresses='' -c fsync=off"
    start = run("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
    if start.returncode != 0:
        unavailable(f"pg_ctl start failed: {start.stderr.strip()} {(root / 'log').read_text()}")
    try:
        created = run("createdb", "-h", str(root), "-p", str(port), "-U", "tune", "optuna")
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg://tune@/optuna?host={root}&port={port}"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def tune_command(url: str, prompts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "optimizer", "tune", "--model", TINY, "--prompts", str(prompts), "--trials", str(TRIALS),
            "--max-new-tokens", "16", "--budget", "8", "--storage", url, "--study-name", "pg", "--heartbeat", "1",
            "--no-progress", *extra]


def trials_of(study: optuna.Study, pid: int, states: tuple[TrialState, ...]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=states) if t.user_attrs.get("worker", "").endswith(f":{pid}")]


def kill_mid_trial(worker: subprocess.Popen, study: optuna.Study, timeout: float = 120.0) -> int:
    """SIGKILL the worker inside a trial, once it has finished one: it is frozen (SIGSTOP) first,
    so that the trial seen running is the one it dies in. Returns that trial's number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before it could be killed"
        if trials_of(study, worker.pid, FINISHED):
            worker.send_signal(signal.SIGSTOP)
            running = trials_of(study, worker.pid, (TrialState.RUNNING,))
            if running:
                worker.kill()
                worker.wait()
                return running[0].number
            worker.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("the worker never finished a trial")


def test_two_workers_share_a_postgresql_study_and_a_killed_worker_is_resumed(postgres, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the first command is two workers itself (--workers 2: one more process on the same study)
    first = subprocess.Popen(tune_command(postgres, prompts, "--seed", "0", "--workers", "2"), cwd=REPO, env=env)
    second = subprocess.Popen(tune_command(postgres, prompts, "--seed", "1"), cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        storage = open_storage(postgres)  # retries while the workers create the tables (optuna's own would not)
        while True:  # the workers create the study; wait for it
            try:
                study = optuna.load_study(study_name="pg", storage=storage)
                break
            except KeyError:
                assert time.monotonic() < deadline, "no study was created"
                time.sleep(0.2)
        killed = kill_mid_trial(second, study)
        out = tmp_path / "tuned.json"
        resumed = subprocess.run(tune_command(postgres, prompts, "--seed", "5", "--confirm", "0", "--out", str(out)),
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert first.wait(timeout=300) == 0
    finally:
        for worker in (first, second):
            if worker.poll() is None:
                worker.kill()
    trials = optuna.load_study(study_name="pg", storage=open_storage(postgres)).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # unique numbers, none missing
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == TRIALS  # the requested number, no more
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in finished if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params  # measured again, same setup
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in finished}
    assert {str(first.pid), str(second.pid)} <= workers  # both shared the study
    assert all(t.state in (*FINISHED, TrialState.FAIL) for t in trials)  # nothing left running
    tree, _ = load_tree_with_lookup(out)
    best = max((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert [list(p) for p in tree] == best.user_attrs["setup"]["paths"]
