"""`python app.py` starts the explorer on the default model, on 127.0.0.1, and serves the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited with {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"app.py did not serve {url} within {START_TIMEOUT_S} s")


def test_python_app_py_serves_the_explorer_on_localhost():
    port = free_port()
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # app.py must turn analytics off by itself
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = wait_for_page(f"http://127.0.0.1:{port}/", process)
        assert "Medusa Explorer" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
            config = response.read().decode()
        assert '"analytics_enabled":false' in config.replace(" ", "")
    finally:
        process.terminate()
        process.wait(timeout=30)
