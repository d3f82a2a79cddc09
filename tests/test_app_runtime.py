"""Launch settings, the ZeroGPU decorator and the shared model store (no model, no server)."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

pytest.importorskip("gradio")

from app import runtime  # noqa: E402
from app.store import ModelKey, ModelStore, normalise_key  # noqa: E402


def test_binds_to_localhost_without_share_unless_configured(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    kwargs = runtime.launch_kwargs()
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False
    assert kwargs["max_file_size"] == runtime.MAX_UPLOAD_BYTES
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert runtime.launch_kwargs()["server_name"] == "0.0.0.0"


def test_analytics_are_off_in_the_built_app():
    from app import build_app

    demo = build_app(store=ModelStore(lambda key: None, default=ModelKey()))
    assert demo.analytics_enabled is False


def test_gpu_task_uses_spaces_gpu_when_importable(monkeypatch):
    def plain() -> str:
        return "ran"

    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails: plain call
    assert runtime.gpu_task(plain) is plain
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn: (lambda *a, **k: "on gpu: " + fn(*a, **k))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert runtime.gpu_task(plain)() == "on gpu: ran"


def test_concurrency_limit_can_be_configured(monkeypatch):
    monkeypatch.setenv("MEDUSA_CONCURRENCY", "3")
    assert runtime.concurrency_limit() == 3


def test_store_loads_each_key_once_even_when_asked_at_once():
    loads: list[ModelKey] = []

    def slow_loader(key: ModelKey) -> str:
        loads.append(key)
        time.sleep(0.2)
        return f"model for {key.model}"

    store = ModelStore(slow_loader, default=ModelKey("a"))  # type: ignore[arg-type]
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.get())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [ModelKey("a")] and results == ["model for a"] * 4


def test_store_keeps_the_most_recent_models_and_a_failed_load_leaves_nothing():
    def loader(key: ModelKey) -> str:
        if key.model == "bad":
            raise ValueError("no such model")
        return key.model

    store = ModelStore(loader, default=ModelKey("a"), capacity=2)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        store.get(ModelKey(name))
    assert not store.is_loaded(ModelKey("a")) and store.is_loaded(ModelKey("c"))
    with pytest.raises(ValueError, match="no such model"):
        store.get(ModelKey("bad"))
    assert not store.is_loaded(ModelKey("bad")) and store.get(ModelKey("b")) == "b"


def test_blank_model_box_fields_mean_the_defaults():
    assert normalise_key(" ", "", None) == ModelKey("default", "default", "auto")


def test_a_model_that_cannot_load_is_reported_in_the_status_and_as_a_page_error():
    import gradio as gr

    from app.model_box import make_status

    def broken(key: ModelKey):
        raise ValueError("the default model's package is not installed")

    model_status, require_model = make_status(ModelStore(broken, default=ModelKey()))
    assert "No model loaded" in model_status(ModelKey()) and "not installed" in model_status(ModelKey())
    with pytest.raises(gr.Error, match="not installed"):
        require_model(ModelKey())
