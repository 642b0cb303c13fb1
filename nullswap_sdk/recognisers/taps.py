"""Feature taps: read one mid-level convolution output of a recogniser during its forward pass.

Mid-level features are shared across face recognisers far more than their final embeddings
(similar edge/part detectors, different heads), so pushing them away from the clean face's is a
transfer lever for attacks (ILA / FIA family). ``depth`` picks the convolution at that fraction
of the network's convolutions in execution order, the same rule for both kinds of surrogate
module (ONNX graphs replayed by ``onnx_torch`` and native torch networks).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .onnx_torch import OnnxGraphModule

__all__ = ["feature_tap"]


@contextmanager
def feature_tap(model: nn.Module, depth: float) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass of ``model`` appends the output of its convolution
    at relative ``depth`` (0: first, 1: last) to the yielded list."""
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"feature tap depth {depth} outside [0, 1]", hint="0.5 taps the middle convolution")
    net = getattr(model, "net", model)
    got: list[torch.Tensor] = []
    graphs = [m for m in net.modules() if isinstance(m, OnnxGraphModule)]
    if graphs:
        g = graphs[0]
        n = sum(1 for label, *_ in g._steps if label == "Conv")
        k = round(depth * (n - 1))
        seen = [0]

        def tap(t: torch.Tensor) -> torch.Tensor:
            if seen[0] % n == k:  # every forward runs all n convolutions in order
                got.append(t)
            seen[0] += 1
            return t

        with g.hook_op("Conv", tap):
            yield got
        return
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"feature tap: {type(net).__name__} has no convolution", hint="tap convolutional recognisers")
    h = convs[round(depth * (len(convs) - 1))].register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        yield got
    finally:
        h.remove()
