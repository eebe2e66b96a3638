"""PyTorch as a Runner: the reference every artifact is compared against."""

from __future__ import annotations

import numpy as np


class TorchComponentRunner:
    """Runs a :class:`~mmdeploy.models.base.Component`'s module on numpy feeds."""

    def __init__(self, component, name: str = "torch"):
        self.component = component
        self.name = name
        self.input_names = list(component.input_names)
        self.output_names = list(component.output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names if n in feeds]
        with torch.no_grad():
            out = self.component.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, dict):
            out = tuple(out[n] for n in self.output_names)
        return {name: value.detach().cpu().numpy() for name, value in zip(self.output_names, out)}
