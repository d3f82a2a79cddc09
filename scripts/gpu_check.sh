#!/usr/bin/env bash
# The GPU checks in one short run: the CUDA tests, the lossless suite in fp32 and bf16 on the
# device, a short benchmark of the default model in each dtype, and the batched benchmark. Results go to $OUT (default
# out/gpu-check). DEVICE=cpu runs the same steps on the CPU (how the tests check this script);
# PROMPTS and TOKENS shorten the benchmark, METHODS (names as in its table) narrows the dtype benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-out/gpu-check}
PROMPTS=${PROMPTS:-8}
TOKENS=${TOKENS:-128}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
"$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/cuda-tests.xml" | tee "$OUT/cuda-tests.txt"
for dtype in float32 bfloat16; do
  "$py" -m medusa_core bench --device "$DEVICE" --dtype "$dtype" --prompts data/prompts/sharegpt-test.txt \
    --num-prompts "$PROMPTS" --max-new-tokens "$TOKENS" --warmup-tokens 8 --prompt-lookup-tokens 10 ${METHODS:+--methods "$METHODS"} \
    --out "$OUT/bench-$DEVICE-$dtype.json" --markdown "$OUT/bench-$DEVICE-$dtype.md" > "$OUT/bench-$DEVICE-$dtype.log" 2>&1
  tail -n 20 "$OUT/bench-$DEVICE-$dtype.md"
done
"$py" -m medusa_core bench --device "$DEVICE" --prompts data/prompts/sharegpt-test.txt --num-prompts "$PROMPTS" \
  --max-new-tokens "$TOKENS" --warmup-tokens 8 --batch-sizes "${BATCH_SIZES:-1,2,4,8,16}" \
  --tree length=heads/smollm2-135m-instruct/tree-length.json \
  --out "$OUT/batch-$DEVICE.json" --markdown "$OUT/batch-$DEVICE.md" > "$OUT/batch-$DEVICE.log" 2>&1
tail -n 12 "$OUT/batch-$DEVICE.md"
