#!/usr/bin/env bash
# The GPU checks in one short run: the CUDA tests, the lossless suite in fp32 and bf16 on the
# device, a short benchmark of the default model in each dtype, and the batched benchmark. Results go to $OUT (default
# out/gpu-check). DEVICE=cpu runs the same steps on the CPU (how the tests check this script);
# PROMPT_FILE, PROMPTS, TOKENS and WARMUP (tokens) shorten the benchmarks, METHODS (names as in their tables)
# narrows the dtype benchmarks, LENGTH_TREE='' leaves the 64-node length tree out of the batched one.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-out/gpu-check}
PROMPT_FILE=${PROMPT_FILE:-data/prompts/sharegpt-test.txt}
PROMPTS=${PROMPTS:-8}
TOKENS=${TOKENS:-128}
WARMUP=${WARMUP:-8}
py=${PYTHON:-.venv/bin/python}
LENGTH_TREE=${LENGTH_TREE-heads/smollm2-135m-instruct/tree-length.json}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
"$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/cuda-tests.xml" | tee "$OUT/cuda-tests.txt"
for dtype in float32 bfloat16; do
  "$py" -m medusa_core bench --device "$DEVICE" --dtype "$dtype" --prompts "$PROMPT_FILE" \
    --num-prompts "$PROMPTS" --max-new-tokens "$TOKENS" --warmup-tokens "$WARMUP" --prompt-lookup-tokens 10 \
    ${METHODS:+--methods "$METHODS"} \
    --out "$OUT/bench-$DEVICE-$dtype.json" --markdown "$OUT/bench-$DEVICE-$dtype.md" > "$OUT/bench-$DEVICE-$dtype.log" 2>&1
  tail -n 20 "$OUT/bench-$DEVICE-$dtype.md"
done
"$py" -m medusa_core bench --device "$DEVICE" --prompts "$PROMPT_FILE" --num-prompts "$PROMPTS" \
  --max-new-tokens "$TOKENS" --warmup-tokens "$WARMUP" --batch-sizes "${BATCH_SIZES:-1,2,4,8,16}" \
  ${LENGTH_TREE:+--tree length="$LENGTH_TREE"} \
  --out "$OUT/batch-$DEVICE.json" --markdown "$OUT/batch-$DEVICE.md" > "$OUT/batch-$DEVICE.log" 2>&1
tail -n 12 "$OUT/batch-$DEVICE.md"
