#!/usr/bin/env bash
# Reproduces every photo-protocol figure in docs/RESULTS.md (CPU; about 50 minutes on a quiet 2-core machine).
# Training ablations come from run logs instead: docs/results/ablations/README.md.
# Needs ../shared/data and ../shared/models (or NULLSWAP_DATA_DIR / NULLSWAP_MODELS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-30}          # probe identities from the LFW validation split
STEPS=${STEPS:-30}  # PGD steps
out=docs/results
OMP_NUM_THREADS=1 python3 -m nullswap_sdk.evaluation.verification --pairs 300 > "$out/lfw_verification.md"
export OMP_NUM_THREADS=1  # steadier timings on a shared 2-core machine
for model in noise noise-strong; do
  nullswap -q eval --dataset lfw-val --limit "$N" --model "$model" --out "$out/lfw_$model"
done
# Noise calibrated to PGD's measured face-box PSNR (~40 dB): 35 dB on the crop.
nullswap -q eval --dataset lfw-val --limit "$N" --model noise --set psnr=35 --out "$out/lfw_noise-crop35"
for model in pgd pgd-strong; do
  nullswap -q eval --dataset lfw-val --limit "$N" --model "$model" --steps "$STEPS" --out "$out/lfw_$model"
done
nullswap -q eval --dataset celeba-wild --limit 10 --model pgd --steps "$STEPS" --out "$out/wild_pgd"
# The shipped network (the default model), same probes.
nullswap -q eval --dataset lfw-val --limit "$N" --model nullswap-net --out "$out/lfw_nullswap-net"
nullswap -q eval --dataset celeba-wild --limit 10 --model nullswap-net --out "$out/wild_nullswap-net"
# Strength sweep of the shipped network (docs/RESULTS.md, "Strength"; 20 probes).
for s in 0.5 1.0 1.5 2.0; do
  nullswap -q eval --dataset lfw-val --limit 20 --model nullswap-net --strength "$s" \
    --out "$out/lfw_strength$s" --title "lfw-val: nullswap-net strength $s"
done
