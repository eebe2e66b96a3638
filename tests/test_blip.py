"""BLIP captioning on a tiny random checkpoint: the three components export and match PyTorch,
the greedy loop over ONNX Runtime and OpenVINO runners reproduces generate() token for token,
`mmdeploy caption`, calibration data and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmdeploy.artifact import load_reference, read_manifest
from mmdeploy.backends import load_runner
from mmdeploy.compare import verify_runner
from mmdeploy.errors import CalibrationError, InputError
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.models import adapter_for_bundle, resolve
from mmdeploy.runtime.generate import greedy_generate, token_agreement
from builders import convert_bundle, openvino_runner, tiny_blip_checkpoint

COMPONENTS = ("vision", "text_decoder", "text_decoder_with_past")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_blip_checkpoint(tmp_path_factory.mktemp("blip") / "ckpt")


@pytest.fixture(scope="module")
def adapter(checkpoint):
    return resolve(checkpoint)


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return convert_bundle(checkpoint, tmp_path_factory.mktemp("blip-bundle") / "bundle")


def test_components_and_torch_loop_matches_generate(adapter):
    assert adapter.family == "blip"
    comps = adapter.components()
    assert set(comps) == set(COMPONENTS)
    settings = adapter.settings()
    assert (settings.bos_token_id, settings.eos_token_id, settings.max_length, settings.num_layers) == (1, 4, 12, 2)
    feeds = comps["text_decoder_with_past"].make_inputs(2, 5)
    assert feeds["input_ids"].shape == (2, 1) and feeds["past.0.key"].shape == (2, 2, 4, 16)
    assert feeds["cross.1.value"].shape == (2, 2, 17, 16)  # 16 patches + cls, projected once
    assert "encoder_hidden_states" not in comps["text_decoder_with_past"].input_names
    out = TorchRunner(comps["text_decoder_with_past"]).run(feeds)
    assert out["present.1.value"].shape == (2, 2, 5, 16) and out["logits"].shape[:2] == (2, 1)

    reference = adapter.reference_tokens()
    lengths = {len(r) for r in reference}
    assert len(lengths) > 1, "the fixture should give captions of several lengths (eos and max_length)"
    assert any(r[-1] == settings.eos_token_id for r in reference)
    torch_runners = {n: TorchRunner(comps[n]) for n in COMPONENTS}
    pixels = adapter.pixel_values(adapter.eval_images())["pixel_values"]
    enc = torch_runners["vision"].run({"pixel_values": pixels})["image_embeds"]
    for with_past in (torch_runners["text_decoder_with_past"], None):  # cached and uncached loops
        tokens = greedy_generate(enc, torch_runners["text_decoder"], settings, with_past)
        from mmdeploy.models.blip import trim

        assert [trim(r, settings) for r in tokens.tolist()] == reference


def test_bundle_parity_and_generation_on_ort_and_openvino(bundle):
    manifest = read_manifest(bundle)
    assert manifest.family == "blip" and [a.component for a in manifest.artifacts] == list(COMPONENTS)
    assert manifest.parity["task"]["top1_agreement"] == 1.0
    assert "reference_tokens" in manifest.metadata and manifest.metadata["generation"]["eos_token_id"] == 4
    adapter = adapter_for_bundle(bundle)  # no weights
    for backend, make in (("onnxruntime", load_runner), ("openvino", openvino_runner)):
        runners = {n: make(bundle / n) for n in COMPONENTS}
        for name in COMPONENTS:
            verify_runner(runners[name], load_reference(bundle / name), atol=1e-4, label=f"{backend}/{name}")
        result = adapter.evaluate(runners)
        assert result.name == "caption-token-agreement"
        assert result.value == 1.0 and result.extra["exact_match"] == 1.0, backend
        # and without the past variant: the uncached loop gives the same tokens
        no_past = adapter.evaluate({k: v for k, v in runners.items() if k != "text_decoder_with_past"})
        assert no_past.predictions == result.predictions


def test_token_agreement():
    assert token_agreement([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert token_agreement([[1, 2, 3, 4]], [[1, 2, 5]]) == 0.5
    assert token_agreement([[1, 2], [1, 4]], [[1, 2], [1, 4]]) == 1.0


def test_caption_cli(bundle, tmp_path, cli, cli_subprocess):
    adapter = adapter_for_bundle(bundle)
    image = adapter.eval_images(3)[2]
    image.save(tmp_path / "shape.png")
    done = cli("caption", bundle, tmp_path / "shape.png", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tokens"] == read_manifest(bundle).metadata["reference_tokens"][2]
    assert result["caption"] == adapter.decode(result["tokens"])
    plain = cli("caption", bundle, tmp_path / "shape.png")
    assert plain.returncode == 0 and plain.stdout.strip() == result["caption"]
    missing = cli("caption", tmp_path / "nowhere", tmp_path / "shape.png")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not an image")
    bad = cli_subprocess("caption", bundle, tmp_path / "broken.png")  # as a user runs it
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "broken.png: not a readable image" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_caption_rejects_other_families(tmp_path):
    from mmdeploy.artifact import Manifest, write_manifest
    from mmdeploy.stages.caption import caption_image

    (tmp_path / "b").mkdir()
    write_manifest(tmp_path / "b", Manifest(kind="model", name="x", family="clip"))
    adapter_img = tmp_path / "i.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(adapter_img)
    with pytest.raises(InputError, match="not a BLIP model bundle"):
        caption_image(tmp_path / "b", adapter_img)
    with pytest.raises(InputError, match="too small"):
        caption_image(tmp_path / "b", adapter_img, max_length=1)


def test_calibration_feeds(bundle, tmp_path):
    from mmdeploy.data.media import write_wav

    adapter = adapter_for_bundle(bundle)
    vision = adapter.calibration_feeds("vision", limit=4)
    assert len(vision) == 4 and vision[0]["pixel_values"].shape == (1, 3, 32, 32)
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\na photo of a blue star\n")
    dec = adapter.calibration_feeds("text_decoder", captions)
    assert len(dec) == 2 and dec[0]["input_ids"][0, 0] == 1 and dec[0]["encoder_hidden_states"].shape[0] == 1
    past = adapter.calibration_feeds("text_decoder_with_past", captions)
    assert past[0]["input_ids"].shape == (1, 1) and past[0]["past.0.key"].shape[2] == dec[0]["input_ids"].shape[1] - 1
    runner = load_runner(bundle / "text_decoder_with_past")
    assert np.isfinite(runner.run(past[0])["logits"]).all()

    audio = tmp_path / "audio"
    audio.mkdir()
    write_wav(audio / "a.wav", np.zeros(100), 16000)
    with pytest.raises(CalibrationError, match="audio, not images"):
        adapter.calibration_feeds("vision", audio)
    (audio / "bad.png").write_bytes(b"nope")
    with pytest.raises(CalibrationError, match="bad.png"):
        adapter.calibration_feeds("vision", audio)
    with pytest.raises(CalibrationError, match="no component"):
        adapter.calibration_feeds("audio")


def test_bench_accuracy_on_blip_bundle(bundle, cli):
    """`mmdeploy bench --accuracy` reaches the BLIP task through the adapter."""
    done = cli("bench", bundle, "--iters", "2", "--warmup", "1", "--accuracy", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["accuracy"][0]
    assert record["metric"] == "caption-token-agreement" and record["value"] == 1.0 and record["n"] == 8


def test_compiled_openvino_bundle_captions(bundle, tmp_path, cli):
    """`mmdeploy compile --target openvino` on the BLIP bundle, then `caption --backend openvino`:
    the compiled IRs give PyTorch's tokens too."""
    done = cli("compile", bundle, "--target", "openvino", "--output", tmp_path / "ov")
    assert done.returncode == 0, done.stderr
    image = adapter_for_bundle(bundle).eval_images(5)[4]
    image.save(tmp_path / "shape.png")
    result = cli("caption", tmp_path / "ov", tmp_path / "shape.png", "--backend", "openvino",
                 "--precision", "fp32", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["backends"] == ["openvino"]
    assert payload["tokens"] == read_manifest(bundle).metadata["reference_tokens"][4]
    missing = cli("caption", tmp_path / "ov", tmp_path / "shape.png", "--backend", "tflite")
    assert missing.returncode == 2 and "lacks a tflite artifact" in missing.stderr


def test_split_placement_encoder_here_decoder_in_the_cloud(bundle, tmp_path, cli):
    """The decoder served over KServe v2, the image encoder local: the same tokens as all-local."""
    from mmdeploy.stages.caption import caption_image
    from mmdeploy.split.server import make_server, start_in_thread

    adapter = adapter_for_bundle(bundle)
    adapter.eval_images(2)[1].save(tmp_path / "shape.png")
    server = make_server(bundle / "text_decoder", port=0, token="s3cret")
    start_in_thread(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        local = caption_image(bundle, tmp_path / "shape.png")
        remote = caption_image(bundle, tmp_path / "shape.png", server=url, token="s3cret")
        assert remote["tokens"] == local["tokens"] == read_manifest(bundle).metadata["reference_tokens"][1]
        assert "remote:text_decoder" in remote["backends"]
        denied = cli("caption", bundle, tmp_path / "shape.png", "--server", url, "--token", "wrong")
        assert denied.returncode != 0 and "Traceback" not in denied.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_runtime_captions_without_toolchain(bundle, tmp_path):
    """mmdeploy.runtime with torch, transformers and onnx unimportable: the captions are
    PyTorch generate()'s, token for token, and decode as transformers decodes them."""
    from _no_toolchain import run_python

    adapter = adapter_for_bundle(bundle)
    reference = read_manifest(bundle).metadata["reference_tokens"]
    files = []
    for i, image in enumerate(adapter.eval_images(len(reference))):
        files.append(tmp_path / f"{i}.png")
        image.save(files[-1])
    code = ("import json, mmdeploy.runtime as rt\nm = rt.load(sys.argv[1])\n"
            "print(json.dumps({'tokens': m.caption_tokens(sys.argv[2:]), 'text': m.caption(sys.argv[2]), "
            "'leaked': _leaked()}))")
    done = run_python(code, bundle, *files)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["tokens"] == reference and got["leaked"] == []
    assert got["text"] == adapter.decode(reference[0])
