"""``inc``: Intel Neural Compressor's accuracy-aware tuning loop driving ONNX Runtime QDQ.

neural-compressor 3.x quantizes PyTorch/TensorFlow models only; its ONNX adaptor moved out.
What it still offers for any framework is the tuner: a ``TuningConfig`` (candidate configs,
``tolerable_loss``, ``max_trials``) and a ``TuningMonitor`` that stops at the first trial within
the loss.  Here the candidates are ONNX Runtime static QDQ configs (calibration method ×
blocks kept in float, by measured sensitivity) and INC decides when to stop.
"""

from __future__ import annotations

from mmdeploy.errors import BackendUnavailable


def _inc():
    try:
        from neural_compressor.common.base_tuning import TuningConfig, TuningMonitor
    except ImportError as exc:
        raise BackendUnavailable(f"--method inc needs neural-compressor ({exc.name} is missing)",
                                 'pip install "mmdeploy[intel]"') from None
    return TuningConfig, TuningMonitor


def inc_accuracy_loop(comps, evaluator, options, quantize_component, log):
    raise BackendUnavailable("--method inc is not implemented yet", "use --method ort-static")
