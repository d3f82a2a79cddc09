"""Trace import: a saved generation.json (medusa-generation/1) re-opened for scrubbing.

The format belongs to medusa_core (engine/record_io reads what records.py writes); this module only
turns an upload into a record, in the user's words when it is not one, and the record's text spans.
The loaded model is not needed: a run saved on a GPU Space opens on a laptop with another model.
"""

from __future__ import annotations

from medusa_core import GenerationRecord
from medusa_core import RecordFormatError, read_record

from .inputs import InputError, upload_text
from .names import display_name
from .text import step_spans

TRACE_HELP = "open a generation.json saved from this explorer (the 'Generation record' download)"


def read_trace(path: str | None) -> GenerationRecord:
    """The record in an uploaded file; InputError saying what is wrong otherwise."""
    text = upload_text(path, "generation record")
    try:
        record = read_record(text)
    except RecordFormatError as err:
        raise InputError(f"this file is not a generation record ({err}): {TRACE_HELP}") from err
    if not record.steps:
        raise InputError("this generation record has no steps: nothing to scrub")
    return record


def trace_spans(record: GenerationRecord) -> list[str]:
    """The output text's spans. The tokenizer may not be here: the one special token a record is
    sure to hold is the end-of-answer token that stopped it."""
    special = frozenset(record.tokens[-1:]) if record.stop_reason == "eos" else frozenset()
    return [span for i, step in enumerate(record.steps) for span in step_spans(i, step, special)]


def heads_in(record: GenerationRecord) -> int:
    """How many heads the record's tree used (the record does not say how many the model had)."""
    return max((len(p) for p in record.tree), default=0)


def trace_note(record: GenerationRecord) -> str:
    model, heads = display_name(record.model), display_name(record.heads)
    return (f"Opened from a file: {model} with heads {heads} on {record.device} {record.dtype}, "
            f"prompt {record.prompt[:60]!r}{'…' if len(record.prompt) > 60 else ''}.")
