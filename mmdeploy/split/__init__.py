"""Split computing: cut a component into edge and cloud halves, plan the cut, serve and run it.

* :mod:`.partition` finds block boundaries and the tensors crossing a cut, and extracts the halves;
* :mod:`.build` writes the split directory (edge/, cloud/, full/, triton/, manifest);
* :mod:`.planner` profiles segments and picks the cut for a bandwidth and round-trip time;
* :mod:`.server` serves artifacts on KServe's model server (REST + gRPC); :mod:`.client` is the
  edge side on Triton's client library (``tritonclient``);
* :mod:`.deploy` writes KServe InferenceService manifests and a Dockerfile;
* :mod:`.hybrid` runs the edge half here and the cloud half remotely, with local fallback;
* :mod:`.triton` writes the Triton model repository for the cloud half.

Modules import onnx/onnxruntime lazily, so importing this package stays cheap.
"""
