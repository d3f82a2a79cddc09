"""One Explore run of a session: its steps so far, Stop, and the record a stopped run leaves.

No Gradio here: the Explore tab streams these values into the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from medusa_core import DecodeConfig, GenerationRecord, MedusaModel, StepRecord, encode_prompt, stream_generation

Path_ = tuple[int, ...]
STOPPED = "stopped"  # GenerationRecord.stop_reason of a run ended by the Stop button


@dataclass
class RunControl:
    """Per session (in a gr.State, changed in place): the current run and whether Stop was pressed.

    Stop is a flag the run checks after every step, so the run itself ends the stream with its
    partial record, trees and stats; cancelling the handler from outside would leave the page
    with the previous run's slider, chart and record under the new text.
    """

    run_id: int = 0
    stop_requested: bool = False

    def start(self) -> int:
        self.run_id += 1
        self.stop_requested = False
        return self.run_id

    def stop(self) -> None:
        self.stop_requested = True

    def should_stop(self, run_id: int) -> bool:
        """True once Stop was pressed, or once a newer run of the session started."""
        return self.stop_requested or run_id != self.run_id


@dataclass(frozen=True)
class RunView:
    """The last run of a session (finished, stopped or still streaming), for the step slider."""

    steps: tuple[StepRecord, ...]
    record: GenerationRecord | None = field(default=None, compare=False)

    @property
    def num_steps(self) -> int:
        return len(self.steps)


def stopped_record(
    medusa: MedusaModel, prompt: str, tree: Sequence[Path_], config: DecodeConfig, steps: Sequence[StepRecord],
    seconds: float,
) -> GenerationRecord:
    """The record of a run stopped after `steps`: the same keys as a finished one, stop_reason "stopped"."""
    base = medusa.base
    tokens = [t for step in steps for t in step.emitted]
    return GenerationRecord(
        model=base.name,
        heads=medusa.heads_name,
        device=str(base.device),
        dtype=str(base.dtype).removeprefix("torch."),
        tree=[list(p) for p in tree],
        settings=config.settings(),
        prompt=prompt,
        prompt_tokens=encode_prompt(base.tokenizer, prompt, config.chat),
        tokens=tokens,
        text=base.tokenizer.decode(tokens, skip_special_tokens=True),
        steps=list(steps),
        seconds=seconds,
        stop_reason=STOPPED,
    )


def decode_steps(
    medusa: MedusaModel, prompt: str, tree: Sequence[Path_], config: DecodeConfig, should_stop: Callable[[], bool],
) -> Iterator[StepRecord | GenerationRecord]:
    """stream_generation that ends early when `should_stop()` turns true after a step: the last item
    is always a GenerationRecord (the engine's, or a stopped one built from the steps so far)."""
    start = time.perf_counter()
    steps: list[StepRecord] = []
    stream = stream_generation(medusa, prompt, tree, config)
    try:
        for item in stream:
            if isinstance(item, GenerationRecord):
                yield item
                return
            steps.append(item)
            yield item
            if should_stop():
                break
    finally:
        stream.close()  # frees the KV cache at once, not when the generator is collected
    yield stopped_record(medusa, prompt, tree, config, steps, time.perf_counter() - start)
