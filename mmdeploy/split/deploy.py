"""Deployment files for served models: KServe InferenceService manifests and a Dockerfile.

Written next to the Triton model repository (by ``mmdeploy split`` into the split directory, by
``mmdeploy serve --export DIR`` for any artifacts)::

    triton/<name>/...                    the Triton model repository
    kserve-triton.yaml                   InferenceService: KServe's Triton runtime on the repository
    kserve-mmdeploy.yaml                 InferenceService: the mmdeploy model server (custom container)
    Dockerfile                           the image kserve-mmdeploy.yaml runs

The manifests are plain ``serving.kserve.io/v1beta1`` InferenceServices; storage URI, image and
token secret are placeholders to edit (named in comments at the top of each file).
"""

from __future__ import annotations

import re
from pathlib import Path

API_VERSION = "serving.kserve.io/v1beta1"
TOKEN_SECRET = "mmdeploy-serve-token"
HTTP_PORT, GRPC_PORT = 8080, 8081
FILES = ("kserve-triton.yaml", "kserve-mmdeploy.yaml", "Dockerfile")


def k8s_name(text: str, suffix: str = "") -> str:
    """An RFC 1035 label (what InferenceService names must be): lowercase, digits, '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "model"
    if not name[0].isalpha():
        name = "m-" + name
    room = 45 - len(suffix)  # KServe derives longer names (predictor-...) from this one
    return name[:room].rstrip("-") + suffix


def triton_inferenceservice(name: str, storage_uri: str | None = None) -> dict:
    """KServe's Triton runtime (``kserve-tritonserver``) serving the model repository."""
    return {
        "apiVersion": API_VERSION, "kind": "InferenceService",
        "metadata": {"name": k8s_name(name, "-triton"), "labels": {"app.kubernetes.io/managed-by": "mmdeploy"}},
        "spec": {"predictor": {
            "model": {
                "modelFormat": {"name": "triton"},
                "runtime": "kserve-tritonserver",
                "protocolVersion": "v2",
                "storageUri": storage_uri or f"pvc://mmdeploy-models/{name}/triton",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            },
        }},
    }


def mmdeploy_inferenceservice(name: str, model_paths: list[str], image: str | None = None) -> dict:
    """The mmdeploy model server in a custom predictor container (the Dockerfile's image)."""
    probe = {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}, "periodSeconds": 10}
    return {
        "apiVersion": API_VERSION, "kind": "InferenceService",
        "metadata": {"name": k8s_name(name, "-mmdeploy"), "labels": {"app.kubernetes.io/managed-by": "mmdeploy"}},
        "spec": {"predictor": {
            "minReplicas": 1,
            "containers": [{
                "name": "kserve-container",
                "image": image or f"mmdeploy-serve-{k8s_name(name)}:latest",
                "args": ["serve", *model_paths, "--host", "0.0.0.0", "--port", str(HTTP_PORT),
                         "--grpc-port", str(GRPC_PORT)],
                "env": [{"name": "MMDEPLOY_SERVE_TOKEN",
                         "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}}],
                "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                "readinessProbe": probe,
                "livenessProbe": {**probe, "httpGet": {**probe["httpGet"], "path": "/v2/health/live"}},
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            }],
        }},
    }


def dockerfile(copies: list[tuple[str, str]], model_paths: list[str]) -> str:
    lines = [
        "# The mmdeploy model server for these models (what kserve-mmdeploy.yaml runs).",
        "#   docker build -t IMAGE .   (this directory is the build context)",
        "# MMDEPLOY_SPEC: what pip installs, e.g. a wheel you copy in: --build-arg MMDEPLOY_SPEC=./mmdeploy.whl",
        "FROM python:3.11-slim",
        'ARG MMDEPLOY_SPEC="mmdeploy[serve]"',
        'RUN pip install --no-cache-dir "$MMDEPLOY_SPEC"',
    ]
    lines += [f"COPY {src} {dst}" for src, dst in copies]
    lines += [
        "USER 1000",
        f"EXPOSE {HTTP_PORT} {GRPC_PORT}",
        'ENTRYPOINT ["mmdeploy", "serve"]',
        "CMD [" + ", ".join(f'"{a}"' for a in [*model_paths, "--host", "0.0.0.0", "--port", str(HTTP_PORT),
                                                "--grpc-port", str(GRPC_PORT)]) + "]",
        "",
    ]
    return "\n".join(lines)


def _dump(doc: dict, note: str) -> str:
    import yaml

    return note + yaml.safe_dump(doc, sort_keys=False)


def write_files(directory: Path, name: str, copies: list[tuple[str, str]], model_paths: list[str]) -> list[str]:
    """The two manifests and the Dockerfile into ``directory`` (the Triton repository is under
    ``directory/triton``)."""
    directory = Path(directory)
    (directory / "kserve-triton.yaml").write_text(_dump(
        triton_inferenceservice(name),
        "# KServe InferenceService: Triton serving ./triton (upload it, then set storageUri to it).\n"))
    (directory / "kserve-mmdeploy.yaml").write_text(_dump(
        mmdeploy_inferenceservice(name, model_paths),
        f"# KServe InferenceService: the mmdeploy model server (image from ./Dockerfile; set image).\n"
        f"# Token: kubectl create secret generic {TOKEN_SECRET} --from-literal=token=...\n"))
    (directory / "Dockerfile").write_text(dockerfile(copies, model_paths))
    return list(FILES)


def write_split_files(directory: Path, name: str) -> list[str]:
    """For a split directory: the image serves its cloud half (manifest.json + cloud/)."""
    return write_files(directory, name, [("manifest.json", f"/models/{name}/manifest.json"),
                                         ("cloud/", f"/models/{name}/cloud/")], [f"/models/{name}"])
