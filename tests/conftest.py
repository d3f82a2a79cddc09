import os

import pytest
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="module")
def server():
    """(url, store): the explorer on the default model in this process, one server per test module."""
    from app import ModelStore, build_app, launch_kwargs, load_key

    store = ModelStore(load_key)
    store.get()
    demo = build_app(store=store)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield url, store
    demo.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)
