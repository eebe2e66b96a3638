"""Model family adapters: what one family of checkpoints looks like to the toolchain.

A multimodal checkpoint is several deployable networks (components).  An adapter, for one
family, knows how to load a local checkpoint safely, which components it has and how to feed
them, its preprocessing (kept in the bundle so later stages need no checkpoint), calibration
and evaluation data, and its task metric computed from any backend's Runners.

Two ways to build an adapter:

* ``Family(source)`` on a checkpoint: ``components()`` loads torch weights lazily;
* ``Family.from_bundle(bundle_dir, manifest)`` on a converted bundle: no weights, but
  preprocessing, calibration data and the task work (for quantize, bench, split).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmdeploy.backends.base import Runner


@dataclass
class Component:
    """One deployable network of a model.

    ``module`` takes the inputs positionally in ``input_names`` order and returns a tensor or a
    tuple of tensors in ``output_names`` order.  ``dynamic_axes`` follows torch.onnx.export.
    ``make_inputs(batch, seed)`` returns fresh valid feeds (numpy) for export and verification.
    ``export_context()`` applies export-time rewrites a backend needs, only around export.
    """

    name: str
    module: "torch.nn.Module"
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    make_inputs: Callable[[int, int], dict[str, np.ndarray]]
    export_context: Callable[[], ContextManager] = contextlib.nullcontext
    modality: str = "tensor"  # image | text | audio | tensor


@dataclass
class TaskResult:
    """A task metric from one set of runners; ``predictions`` lets two results be compared."""

    name: str  # e.g. "zero-shot-top1"
    value: float  # in [0, 1]
    n: int
    predictions: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def agreement(self, other: "TaskResult") -> float:
        """Fraction of samples where both predicted the same class."""
        if not self.predictions or len(self.predictions) != len(other.predictions):
            return float("nan")
        same = sum(a == b for a, b in zip(self.predictions, other.predictions))
        return same / len(self.predictions)


class Adapter:
    family: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        self.source = Path(source)
        self.allow_pickle = allow_pickle
        self.options = dict(options or {})
        self.bundle_metadata: dict[str, Any] = {}
        from mmdeploy.models.preprocess import Provenance

        # where the tokenizer / processors came from (checkpoint, --processor DIR, derived, none)
        self.provenance = Provenance()

    # ---- detection and loading --------------------------------------------------------
    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        """True if this family handles ``source`` (``config`` is its parsed config.json, if any)."""
        return False

    @classmethod
    def from_bundle(cls, bundle_dir: Path, metadata: dict) -> "Adapter":
        """An adapter over a converted bundle's ``preprocess/`` files, without weights."""
        adapter = cls(Path(bundle_dir) / "preprocess", options=metadata.get("options", {}))
        adapter.bundle_metadata = dict(metadata)
        return adapter

    def components(self) -> dict[str, Component]:
        raise NotImplementedError

    def torch_model(self):
        """The loaded torch model (for passes such as pruning that work on PyTorch)."""
        raise NotImplementedError(f"{self.family} does not expose a torch model")

    # ---- what the bundle keeps --------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """Family metadata recorded in the bundle manifest (head parameters, task, options)."""
        return {}

    def preprocess_files(self) -> list[Path]:
        """Files (tokenizer, processor configs) copied into the bundle's ``preprocess/``."""
        return []

    def processor_dir(self) -> Path | None:
        """``--processor DIR`` (option key ``processor``): preprocessing files from another folder."""
        from mmdeploy.models.preprocess import processor_dir_of

        return processor_dir_of(self.options)

    def resolve_preprocessing(self):
        """Load (or derive) every preprocessing part the family uses, so that ``provenance`` is
        complete before the bundle manifest is written; returns it."""
        return self.provenance

    # ---- data -------------------------------------------------------------------------
    def verification_feeds(self, component: str) -> list[dict[str, np.ndarray]]:
        """Several fresh inputs (batch 1 and > 1; real data where the family has it)."""
        comp = self.components()[component]
        return [comp.make_inputs(1, 101), comp.make_inputs(3, 102)]

    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """Calibration inputs for one component, from ``path`` (images, captions file, audio
        folder) or the family's bundled set.  Raises CalibrationError on bad data."""
        raise NotImplementedError(f"{self.family} has no calibration data")

    # ---- task -------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        """Components the task needs (empty: the family has no task metric)."""
        return ()

    def evaluate(self, runners: dict[str, "Runner"], limit: int | None = None) -> TaskResult | None:
        """The task metric computed from runners (one per component in task_components())."""
        return None
