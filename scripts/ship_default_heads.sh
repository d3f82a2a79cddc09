#!/usr/bin/env bash
# Rebuild everything shipped for the default model: heads, accuracy table, CPU latency profile,
# length- and speed-optimal trees, and the CPU benchmark. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
H=heads/smollm2-135m-instruct
B=benchmarks
step=${1:-all}
if [ "$step" = all ] || [ "$step" = train ]; then
  $py -m medusa_core train-heads --prompts data/prompts/train.txt --out "$H" --max-new-tokens 192 --gen-batch-size 64 --epochs 2 --batch-size 64
fi
if [ "$step" = all ] || [ "$step" = trees ]; then
  rm -f "$H/tree.json" /tmp/medusa-ship.db  # calibrate with the plain chain; fresh studies
  $py -m medusa_core calibrate --heads "$H" --prompts data/prompts/sharegpt-calibration.txt --out "$H/accuracy.json" --max-new-tokens 128 --top-k 10
  $py -m optimizer profile --out "$B/latency-cpu-smollm2-135m.json"
  # Length: 54 heads' nodes + a 10-token context-lookup chain = 64 nodes; any match, however short.
  $py -m optimizer search --accuracy "$H/accuracy.json" --budget 54 --objective length --trials 300 --storage "sqlite:////tmp/medusa-ship.db" \
    --lookup-tokens 10 --lookup-ngram 1 3 --out "$H/tree-length.json"
  # Speed: the fastest heads' tree, plus an 8-token chain on matches of 2-3 tokens (chosen by bench runs).
  $py -m optimizer search --accuracy "$H/accuracy.json" --budget 64 --objective speed --profile "$B/latency-cpu-smollm2-135m.json" --trials 300 --storage "sqlite:////tmp/medusa-ship.db" \
    --lookup-tokens 8 --lookup-ngram 2 3 --out "$H/tree-speed.json"
  cp "$H/tree-speed.json" "$H/tree.json"
fi
if [ "$step" = all ] || [ "$step" = bench ]; then
  $py -m medusa_core bench --prompts data/prompts/test.txt --num-prompts 20 --max-new-tokens 128 \
    --tree length="$H/tree-length.json" --tree speed="$H/tree-speed.json" --prompt-lookup-tokens 3,10 --threads 2 \
    --out "$B/cpu-smollm2-135m.json" --markdown "$B/cpu-smollm2-135m.md"
fi
