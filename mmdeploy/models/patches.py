"""Export-time patch-embedding rewrite: a ViT's patch embedding (a Conv2d whose stride equals
its kernel, no padding) exported as the MatMul it is — image → [batch, patches, C·k·k] → × W.

Same outputs.  Why: runtimes run it as one more fully connected layer (AMX / VNNI GEMM, int8 like
the others) instead of a strided convolution kernel; on CLIP ViT-B/32, batch 1, NNCF int8 on
OpenVINO the convolution took 12 % of the image tower (1.5 ms of 12.7).
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

from mmdeploy.models.attention import restore_forwards


def _is_patch_conv(module) -> bool:
    import torch

    return (isinstance(module, torch.nn.Conv2d) and module.groups == 1 and tuple(module.stride) == tuple(module.kernel_size)
            and min(module.kernel_size) > 1 and module.padding in ("valid", (0, 0), [0, 0])
            and tuple(module.dilation) == (1, 1))


def _patch_forward(self, x):
    kh, kw = self.kernel_size
    batch, channels, height, width = x.shape
    if height % kh or width % kw:  # a partial border the convolution drops: keep the convolution
        return type(self).forward(self, x)
    gh, gw = height // kh, width // kw
    patches = x.reshape(batch, channels, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5).reshape(batch, gh * gw, -1)
    out = patches @ self.weight.reshape(self.out_channels, -1).t()
    if self.bias is not None:
        out = out + self.bias
    return out.permute(0, 2, 1).reshape(batch, self.out_channels, gh, gw)  # the convolution's layout


@contextlib.contextmanager
def matmul_patch_embedding(module) -> Iterator[int]:
    """Within the block, every patch-embedding convolution of ``module`` (instances only)
    computes as a MatMul; yields how many were rewritten; restores them afterwards."""
    patched = []
    for sub in module.modules():
        if _is_patch_conv(sub):
            patched.append((sub, sub.__dict__.get("forward")))
            sub.forward = types.MethodType(_patch_forward, sub)
    try:
        yield len(patched)
    finally:
        restore_forwards(patched)
