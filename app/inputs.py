"""User input at the edge of the app: uploads (size-limited), downloads, and errors shown in the page."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from medusa_core import HeadsLoadError, ModelLoadError, PromptTooLongError, TreeError
from optimizer import AccuracyError, EngineError, LengthModelError, ProfileError, SearchError

from .runtime import MAX_UPLOAD_BYTES

log = logging.getLogger("medusa_explorer")

DOWNLOAD_ROOT = Path(tempfile.gettempdir()) / "medusa-explorer-downloads"
DOWNLOAD_MAX_AGE_S = 3600


class InputError(ValueError):
    """Input the user can fix; the message says how."""


# Errors whose message is meant for the user: shown as-is in the page, logged in one line. Anything
# else is a fault of ours: shown as such, logged with its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    InputError, TreeError, PromptTooLongError, ModelLoadError, HeadsLoadError,
    AccuracyError, EngineError, LengthModelError, ProfileError, SearchError,
)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def user_error(message: str) -> gr.Error:
    """A message in the page for something the user can fix; one line in the server log, no traceback
    (gradio prints a traceback for every gr.Error unless told not to)."""
    log.warning("user error: %s", one_line(message))
    return gr.Error(message, title="Cannot do that", print_exception=False)


@contextmanager
def shown_in_page(what: str) -> Iterator[None]:
    """Turn a user-fixable error into a gr.Error (a message in the page; the app keeps serving); a
    fault of ours is shown as one too, with its traceback in the log."""
    try:
        yield
    except gr.Error:
        raise
    except USER_ERRORS as err:
        raise user_error(f"{what}: {err}") from err
    except Exception as err:
        log.exception("fault (%s)", what)
        raise gr.Error(f"{what}: an internal error ({type(err).__name__}: {one_line(err)}); the server log has the details",
                       title="Internal error", print_exception=False) from err


def upload_text(path: str | None, what: str, limit: int = MAX_UPLOAD_BYTES) -> str:
    if not path:
        raise InputError(f"no {what} file was uploaded")
    file = Path(path)
    size = file.stat().st_size
    if size > limit:
        raise InputError(f"the {what} file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"the {what} file is not UTF-8 text") from err


def upload_json(path: str | None, what: str) -> object:
    text = upload_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"the {what} file is not valid JSON ({err})") from err


def prune_downloads(now: float) -> None:
    """Remove downloads older than an hour (another session may be pruning at the same time)."""
    for old in DOWNLOAD_ROOT.glob("*/*"):
        try:
            if now - old.stat().st_mtime > DOWNLOAD_MAX_AGE_S:
                old.unlink()
                old.parent.rmdir()
        except OSError:
            continue


def write_download(filename: str, content: str) -> str:
    """Write a file for a download button under its own name; files older than an hour go."""
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    prune_downloads(time.time())
    folder = Path(tempfile.mkdtemp(dir=DOWNLOAD_ROOT))
    path = folder / filename
    path.write_text(content, encoding="utf-8")
    return str(path)
