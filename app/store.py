"""Loaded models shared read-only by every session, keyed by (model, heads, device)."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from medusa_core import MedusaModel, ThreadBudget, load_medusa
from medusa_core.modeling.models import DEFAULT_HEADS

DEFAULT = "default"
RANDOM_HEADS = "random"


@dataclass(frozen=True)
class ModelKey:
    """What a session asked for; "default" means the embedded model / the shipped heads."""

    model: str = DEFAULT
    heads: str = DEFAULT
    device: str = "auto"

    def describe(self) -> str:
        return f"model {self.model}, heads {self.heads}, device {self.device}"


Loader = Callable[[ModelKey], MedusaModel]


def shipped_heads_present() -> bool:
    return (DEFAULT_HEADS / "config.json").is_file()


def default_key() -> ModelKey:
    """The embedded model with the shipped heads, or untrained heads until those exist."""
    return ModelKey(heads=DEFAULT if shipped_heads_present() else RANDOM_HEADS)


def load_key(key: ModelKey) -> MedusaModel:
    """Load through medusa_core, mapping "default" to its own defaults."""
    model = None if key.model == DEFAULT else key.model
    heads = None if key.heads == DEFAULT else key.heads
    return load_medusa(model, heads, key.device)


def normalise_key(model: str | None, heads: str | None, device: str | None) -> ModelKey:
    return ModelKey((model or "").strip() or DEFAULT, (heads or "").strip() or DEFAULT, device or "auto")


class ModelStore:
    """Loads each key once (one load at a time) and keeps the most recent `capacity` models.

    Sessions only read the models; a session that still holds an evicted model keeps using it.
    """

    def __init__(self, loader: Loader = load_key, default: ModelKey | None = None, capacity: int = 2) -> None:
        self.loader = loader
        self.default = default or default_key()
        self.capacity = capacity
        self._models: OrderedDict[ModelKey, MedusaModel] = OrderedDict()
        self._loading: dict[ModelKey, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts, never held while loading
        self.threads = ThreadBudget()  # the CPU's cores shared by the generations running at once

    def cpu_share(self, medusa: MedusaModel) -> AbstractContextManager:
        """Hold a share of the CPU's cores while decoding on the CPU (a GPU model needs none)."""
        return self.threads.generation() if medusa.base.device.type == "cpu" else nullcontext(lambda: 0)

    def get(self, key: ModelKey | None = None) -> MedusaModel:
        key = key or self.default
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # a second session asking for the same key waits for the first load
            with self._lock:
                if key in self._models:
                    return self._models[key]
            try:
                model = self.loader(key)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            return model

    def is_loaded(self, key: ModelKey) -> bool:
        with self._lock:
            return key in self._models
