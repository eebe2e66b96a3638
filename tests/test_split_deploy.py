"""Deployment files: the KServe InferenceService manifests validate against the Kubernetes / KServe
schemas (the kserve and kubernetes Python client models: unknown fields, wrong types and missing
required fields fail), the Dockerfile copies what the manifest serves, and `serve --export` output
is servable as written."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import yaml
from builders import cached_split

from mmdeploy.cli import main
from mmdeploy.split.server import make_server, start_in_thread

PRIMITIVES = {"str", "int", "float", "bool", "object", "date", "datetime"}


def _model_class(name):
    argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses argv at import
    try:
        import kserve.models
    finally:
        sys.argv = argv
    import kubernetes.client

    cls = getattr(kserve.models, name, None) or getattr(kubernetes.client, name, None)
    assert cls is not None, f"no schema model {name}"
    return cls


def deserialize(data, klass: str, where: str = "$"):
    """Build the client model ``klass`` from ``data`` (a manifest dict), strictly: every key must be
    a field of the schema, every type must match, the models' own validation runs."""
    if klass.startswith(("list[", "List[")):
        assert isinstance(data, list), f"{where}: list expected"
        return [deserialize(x, klass[5:-1], f"{where}[{i}]") for i, x in enumerate(data)]
    if klass.startswith(("dict(", "dict[", "Dict[")):
        value_type = re.match(r"[dD]ict[\[(]([^,]*), (.*)[\])]", klass).group(2)
        assert isinstance(data, dict), f"{where}: mapping expected"
        return {k: deserialize(v, value_type, f"{where}.{k}") for k, v in data.items()}
    if klass in PRIMITIVES:
        if klass in ("str", "int", "bool"):
            assert isinstance(data, {"str": str, "int": int, "bool": bool}[klass]), f"{where}: {klass} expected"
        return data
    cls = _model_class(klass)
    assert isinstance(data, dict), f"{where}: {klass} object expected"
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{where}: {klass} has no field {unknown[0]!r}"
    kwargs = {fields[k]: deserialize(v, cls.openapi_types[fields[k]], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)  # required fields and enums are checked by the model


def _load(path):
    doc = yaml.safe_load(path.read_text())
    isvc = deserialize(doc, "V1beta1InferenceService")
    assert isvc.api_version == "serving.kserve.io/v1beta1" and isvc.kind == "InferenceService"
    name = isvc.metadata.name
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 45  # RFC 1035, KServe's bound
    return isvc


def test_split_writes_valid_manifests_and_dockerfile(tmp_path_factory):
    split_dir = cached_split(tmp_path_factory, "vision", "block:0")
    triton_isvc = _load(split_dir / "kserve-triton.yaml")
    model = triton_isvc.spec.predictor.model
    assert model.runtime == "kserve-tritonserver" and model.protocol_version == "v2"
    assert model.storage_uri.endswith("/vision_cloud/triton") and (split_dir / "triton" / "vision_cloud").is_dir()

    isvc = _load(split_dir / "kserve-mmdeploy.yaml")
    [container] = isvc.spec.predictor.containers
    assert container.args[:2] == ["serve", "/models/vision_cloud"]
    port = container.args[container.args.index("--port") + 1]
    assert [p.container_port for p in container.ports] == [int(port)]
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.env[0].name == "MMDEPLOY_SERVE_TOKEN" and container.env[0].value_from.secret_key_ref.key

    # the Dockerfile: every COPY source exists in the build context (the split dir), the served
    # path is what it copies, and the command is the manifest's
    lines = [line for line in (split_dir / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    assert copies and all((split_dir / src).exists() for src, _ in copies)
    assert all(dst.startswith("/models/vision_cloud/") for _, dst in copies)
    entry = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT"))[len("ENTRYPOINT"):])
    cmd = json.loads(next(line for line in lines if line.startswith("CMD"))[len("CMD"):])
    assert entry == ["mmdeploy", "serve"] and ["serve", *cmd] == container.args


def test_strict_deserializer_rejects_typos():
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"},
           "spec": {"predictor": {"containers": [{"name": "c", "image": "i", "portz": []}]}}}
    with pytest.raises(AssertionError, match="no field 'portz'"):
        deserialize(doc, "V1beta1InferenceService")
    doc["spec"]["predictor"]["containers"] = [{"image": "i"}]  # name is required
    with pytest.raises(ValueError):
        deserialize(doc, "V1beta1InferenceService")


def test_serve_export_any_artifacts_is_servable(tmp_path_factory, tmp_path, capsys):
    split_dir = cached_split(tmp_path_factory, "vision", "block:0")
    out = tmp_path / "deploy"
    with pytest.raises(SystemExit) as info:  # the split and a whole ONNX component (its full/)
        main(["serve", str(split_dir), str(split_dir / "full"), "--export", str(out), "--json"])
    assert info.value.code == 0
    written = json.loads(capsys.readouterr().out)
    assert written["models"] == ["vision_cloud", "vision"]
    for name in written["models"]:
        repo = out / "triton" / name
        assert (repo / "config.pbtxt").is_file() and (repo / "1" / "model.onnx").is_file()
    isvc = _load(out / "kserve-mmdeploy.yaml")
    assert isvc.spec.predictor.containers[0].args[1:3] == ["/models/vision_cloud", "/models/vision"]
    _load(out / "kserve-triton.yaml")
    # what the image holds is servable
    srv = make_server([out / "models" / "vision_cloud", out / "models" / "vision"], port=0, grpc_port=None)
    start_in_thread(srv)
    try:
        from mmdeploy.artifact import load_reference
        from mmdeploy.split.client import V2Client

        feeds, ref = load_reference(split_dir / "full")[0]
        got = V2Client(srv.url).infer("vision", feeds)["image_embeds"]
        assert np.abs(got - ref["image_embeds"]).max() < 1e-5
    finally:
        srv.shutdown()
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path / "nothing"), "--export", str(tmp_path / "x")])
    assert info.value.code == 2 and not (tmp_path / "x").exists()
