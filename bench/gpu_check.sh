#!/usr/bin/env bash
# One call on a lent GPU (device tool: runs in the repo root, results under $OUT; no network):
#   (a) tests/test_kernels_triton.py on CUDA, (b) eager / torch.compile / Triton / CUDA-graph
#   timings at batch 1, 8, 64 of the whole net and of the Cloaking Block, (c) JSON + Markdown.
# Budget ~5 min: every step has its own timeout, and each writes what it has before the next.
#   bash bench/gpu_check.sh            # OUT defaults to ./gpu_out
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
unset TRITON_INTERPRET  # compiled kernels here, never the interpreter
export PYTHONDONTWRITEBYTECODE=1
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

log "environment"
{
  nvidia-smi || echo "nvidia-smi: not available"
  $PY - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "triton", "numpy", "cv2", "pytest", "onnxruntime"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING:", type(e).__name__, e)
import torch
print("cuda available", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! $PY -c "import torch, triton, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$OUT/gpu_check.log"; then
  log "FATAL: torch with CUDA and triton are needed here (see env.txt); nothing measured"
  exit 2
fi

log "(a) Triton kernel tests on CUDA"
timeout 150 $PY bench/gpu_bench.py test --out "$OUT" > "$OUT/tests.txt" 2>&1
test_rc=$?
tail -n 25 "$OUT/tests.txt"
log "tests exit code $test_rc (124 = timed out)"

log "(b) benchmarks"
timeout 240 $PY bench/gpu_bench.py bench --out "$OUT" --test-rc "$test_rc" 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
log "bench exit code $bench_rc (124 = timed out; gpu_bench.json keeps what was measured)"
[[ -f "$OUT/gpu_bench.md" ]] && cat "$OUT/gpu_bench.md"
ls -la "$OUT"
exit $(( test_rc != 0 || bench_rc != 0 ))
