#!/usr/bin/env bash
# The prepared GPU check (issues 12 and 13), for an NVIDIA H100/H200 with the CUDA driver and
# NVRTC: builds with `--features cuda`, runs the model parity, attention and precision tests on
# CUDA, `firempo forward` in f32 and bf16 on the llava-hf parity fixture against transformers'
# logits, and `demo --quick --backend cuda`, printing each stage's time and the device's peak
# memory (sampled by nvidia-smi). Writes its logs to ${OUT:-gpu-check}/. Run from anywhere:
#
#   bash scripts/gpu-check.sh
#
# Not run in CI (it needs a GPU). Not measured yet: no GPU was lent to the sessions so far.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export CARGO_TERM_COLOR=never
start=$(date +%s)
stage() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stage "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.csv"
# Peak device memory over the whole check (MiB), sampled every 200 ms.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/memory.log" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

stage "build: cargo build --release --features cuda"
cargo build --release --features cuda 2>&1 | tail -3

stage "model tests on CUDA (parity with transformers, blocked attention, mixed precision)"
# (`scoring::` also matches `qwen_vl_scoring::`, which the check leaves out.)
cargo test --release -p firempo-models --features test-cuda --test suite -- \
    parity:: attention:: precision:: scoring:: --skip qwen_vl_scoring:: 2>&1 | tee "$OUT/model-tests.log" | grep -E "^test |test result"

fixture=models/tests/fixtures/llava_llama
for dtype in f32 bf16; do
  tolerance=$([ "$dtype" = f32 ] && echo 1e-4 || echo 2e-2)
  stage "firempo forward --backend cuda --dtype $dtype (tolerance $tolerance against transformers)"
  ./target/release/firempo forward --backend cuda --dtype "$dtype" --model "$fixture" \
      --inputs "$fixture/expected.safetensors" --compare "$fixture/expected.safetensors" \
      --tolerance "$tolerance" --out "$OUT/logits-$dtype.safetensors" --overwrite | tee "$OUT/forward-$dtype.log"
done

stage "firempo demo --quick --backend cuda"
/usr/bin/time -v ./target/release/firempo demo --quick --backend cuda --out "$OUT/demo" \
    > "$OUT/demo.log" 2> "$OUT/demo.time" || { tail -30 "$OUT/demo.log"; exit 1; }
grep -E "^\| (method|SFT|DPO|FiRe-MPO) " "$OUT/demo.log" | head -5
grep -E "Elapsed|Maximum resident" "$OUT/demo.time"

kill $sampler 2>/dev/null || true
stage "done; peak device memory $(sort -n "$OUT/memory.log" | tail -1) MiB"
