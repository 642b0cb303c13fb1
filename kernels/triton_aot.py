"""Compile the Triton kernels for an NVIDIA target down to a cubin, without a GPU.

    python3 -m nullswap_sdk.kernels.triton_aot            # every specialisation the net uses, sm_90
    python3 -m nullswap_sdk.kernels.triton_aot --quick    # the richest few (CI)

The interpreter checks numerics on the CPU but not what only the compiler rejects (dot
shapes, type promotion, layouts). Needs TRITON_INTERPRET unset: under the interpreter
``triton.language`` is patched and cannot build IR (the CI test runs this in a subprocess).
"""
from __future__ import annotations

import argparse
import os
import sys

_CONV_SIG = {"a_ptr": "A", "a_bs": "i32", "CA": "i32", "a_mul": "fp32", "a_add": "fp32", "b_ptr": "*fp32",
             "b_bs": "i32", "CB": "i32", "b_mul": "fp32", "b_add": "fp32", "se_ptr": "*fp32", "skip_ptr": "A",
             "skip_bs": "i32", "w_ptr": "A", "bias_ptr": "*fp32", "mask_ptr": "*fp32", "out_ptr": "O",
             "out_bs": "i32", "part_ptr": "*fp32", "H": "i32", "W": "i32", "COUT": "i32", "RELU_LIMIT": "i32",
             "EPS": "fp32"}
# (name, K, KS, HAS_B, SE_IN, SHUFFLE, POOL, EPI, BLOCK_CO): TritonNullSwapNet's convs at the default widths
_CONVS = [("k1", 288, 3, True, False, False, False, 0, 32), ("k2", 144, 3, False, False, False, True, 0, 16),
          ("k4", 144, 3, False, True, True, False, 0, 32), ("k5", 72, 3, False, False, False, False, 0, 16),
          ("tail0", 72, 3, True, False, False, False, 0, 16), ("final_cap", 72, 3, False, False, False, False, 1, 16),
          ("final_fixed", 72, 3, False, False, False, False, 2, 16)]
_QUICK = [("all_prologues", 288, 3, True, True, True, True, 0, 32), ("final_cap", 72, 3, False, False, False, False, 1, 16)]


def compile_all(quick: bool = False, arch: int = 90) -> list[str]:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter patches triton.language")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .triton_conv import _conv_kernel
    from .triton_finalize import _finalize_kernel
    from .triton_se import _se_kernel

    target, done = GPUTarget("cuda", arch, 32), []

    def build(fn, sig, consts, name):
        sig = {**sig, **{k: "constexpr" for k in consts}}
        kernel = triton.compile(ASTSource(fn, sig, consts), target=target)
        if not kernel.asm.get("cubin"):
            raise RuntimeError(f"{name}: no cubin")
        done.append(f"{name}: shared {kernel.metadata.shared} B")

    for fp16 in ((True,) if quick else (False, True)):
        act = "*fp16" if fp16 else "*fp32"
        for name, K, KS, has_b, se_in, shuf, pool, epi, bco in (_QUICK if quick else _CONVS):
            sig = {k: act if v == "A" else ("*fp32" if epi else act) if v == "O" else v for k, v in _CONV_SIG.items()}
            build(_conv_kernel, sig, dict(K=K, KS=KS, HAS_B=has_b, SE_IN=se_in, SHUFFLE=shuf, POOL=pool, EPI=epi,
                                          FP16=fp16, BLOCK_P=64, BLOCK_K=32, BLOCK_CO=bco),
                  f"conv {name} {'fp16' if fp16 else 'fp32'}")
    build(_se_kernel, {"part_ptr": "*fp32", "C": "i32", "HID": "i32", "inv_hw": "fp32", "w1_ptr": "*fp32",
                       "b1_ptr": "*fp32", "w2_ptr": "*fp32", "b2_ptr": "*fp32", "s_ptr": "*fp32"},
          dict(NPT=16, BLOCK_C=16, BLOCK_H=16), "se")
    for mode in ((2,) if quick else (0, 1, 2)):
        build(_finalize_kernel, {"x_ptr": "*fp32", "d_ptr": "*fp32", "part_ptr": "*fp32", "out_ptr": "*fp32",
                                 "N": "i32", "inv_n": "fp32", "max_mse": "fp32", "EPS": "fp32"},
              dict(NPART=768, MODE=mode, BLOCK=1024, BLOCK_R=64), f"finalize mode {mode}")
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--arch", type=int, default=90, help="SM version, e.g. 80 (A100), 90 (H100)")
    args = ap.parse_args()
    for line in compile_all(args.quick, args.arch):
        print("ok", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
