"""Helpers for the API tests: reading gradio_client outputs (the server fixtures are in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path


def value(output):
    """A component update (a dict from gradio_client) or a plain value -> the value."""
    return output["value"] if isinstance(output, dict) and "__type__" in output else output


def record_of(outputs: tuple) -> dict:
    """The generation record behind a run's download (its last output)."""
    return json.loads(Path(value(outputs[-1])).read_text())
