"""mmdeploy.data.media, the one door for user files: one extension table, image decoding from
any Pillow mode, listing (nested class folders), unreadable files skipped and counted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmdeploy
from mmdeploy.data import media
from mmdeploy.errors import CalibrationError, InputError

PACKAGE = Path(mmdeploy.__file__).resolve().parent
# opening a user's picture or recording: only mmdeploy/data/ may
USER_FILE_READS = re.compile(r"Image\.open\(|\bwave\.open\(|soundfile\.read\(|wavfile\.read\(|librosa\.load\(|"
                             r"torchaudio\.load\(|Image\.MAX_IMAGE_PIXELS|LOAD_TRUNCATED_IMAGES")


def test_no_module_outside_data_opens_a_users_file():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "data":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if USER_FILE_READS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "decode user files through mmdeploy.data.media:\n" + "\n".join(offenders)


def test_one_extension_table():
    """No other module keeps its own list of image or audio extensions (two or more on a line)."""
    extension = re.compile(r"""["']\.(jpe?g|png|bmp|gif|webp|tiff?|wave?|flac|ogg|mp3|aiff?)["']""", re.IGNORECASE)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "data":
            continue
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if len(extension.findall(line)) >= 2:
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "use mmdeploy.data.media's table:\n" + "\n".join(offenders)


def test_importable_without_torch_transformers_onnx():
    code = ("import sys, mmdeploy.data.media as m, mmdeploy.data.imagefolder; "
            "print(sorted(x for x in ('torch', 'transformers', 'onnx', 'onnxruntime', 'scipy') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_extension_table_any_case():
    assert media.modality_of("a/B.JPG") == "image" and media.modality_of("x.WebP") == "image"
    assert media.modality_of("clip.WAV") == "audio" and media.modality_of("clip.aiff") == "audio"
    assert media.modality_of("notes.txt") is None and media.modality_of("noext") is None


def _img(mode, size=(6, 4), **kw):
    from PIL import Image

    return Image.new(mode, size, **kw)


@pytest.mark.parametrize("mode,value,expected", [
    ("I;16", 65535, 255), ("I;16", 257 * 100, 100), ("I;16B", 257 * 7, 7), ("I", 257 * 200, 200),
    ("I", -(2 ** 31), 0), ("F", 0.5, 128), ("F", 200.0, 200), ("L", 9, 9), ("1", 1, 255), ("CMYK", (0, 0, 0, 0), 255),
])
def test_to_rgb_scales_every_mode_to_8_bits(mode, value, expected):
    got = np.asarray(media.to_rgb(_img(mode, color=value)))
    assert got.dtype == np.uint8 and got.shape == (4, 6, 3)
    assert (got == expected).all(), (mode, value, got[0, 0])


def test_to_rgb_composites_transparency_on_white():
    rgba = media.to_rgb(_img("RGBA", color=(0, 0, 0, 0)))
    la = media.to_rgb(_img("LA", color=(0, 128)))
    assert (np.asarray(rgba) == 255).all() and abs(int(np.asarray(la)[0, 0, 0]) - 127) <= 1


def test_decode_image_reasons(tmp_path):
    from PIL import Image

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name, reason in [("empty.png", "empty file"), ("text.jpg", "not an image Pillow can read"),
                         ("cut.jpg", "truncated")]:
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}: not a readable image ({reason})")):
            media.decode_image(tmp_path / name)
    with pytest.raises(InputError, match="no such image file"):
        media.decode_image(tmp_path / "gone.png")
    images, kept, skipped = media.decode_images([tmp_path / n for n in ("empty.png", "full.jpg", "cut.jpg")])
    assert kept == [1] and len(images) == 1 and [s["file"] for s in skipped] == [str(tmp_path / "empty.png"),
                                                                                 str(tmp_path / "cut.jpg")]
    assert media.skipped_note(skipped) == f"skipped 2 unreadable files: first: {tmp_path / 'empty.png'} (empty file)"
    assert media.skipped_note([]) is None
    with pytest.raises(InputError, match="empty.png"):
        media.decode_images([tmp_path / "empty.png"], strict=True)


def test_nested_listing_like_torchvision(tmp_path):
    from PIL import Image

    for rel in ("cat/2.png", "cat/indoor/1.JPG", "cat/indoor/deep/0.webp", "cat/.hidden/x.png", "cat/.x.png",
                "cat/notes.txt", "dog/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(tmp_path / rel, format="PNG")
    (tmp_path / "cat" / "indoor" / "loop").symlink_to(tmp_path / "cat")  # a link back up the tree
    found = [p.relative_to(tmp_path).as_posix() for p in media.media_files(tmp_path / "cat", recursive=True)]
    assert found == ["cat/2.png", "cat/indoor/1.JPG", "cat/indoor/deep/0.webp"]
    assert [p.name for p in media.media_files(tmp_path / "cat")] == ["2.png"]

    from mmdeploy.data.imagefolder import read_imagefolder

    ds = read_imagefolder(tmp_path)
    assert ds.classnames == ["cat", "dog"] and ds.labels == [0, 0, 0, 1]


def test_calibration_images(tmp_path):
    from PIL import Image

    from mmdeploy.data.calib import calibration_images

    with pytest.raises(CalibrationError, match="does not exist"):
        calibration_images(tmp_path / "nope")
    (tmp_path / "a" / "x").mkdir(parents=True)
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "a" / "x" / "1.png")
    Image.new("RGB", (4, 4), "red").save(tmp_path / "a" / "2.png")
    (tmp_path / "a" / "3.png").write_bytes(b"")
    got = calibration_images(tmp_path / "a")
    assert [f.name for f in got.files] == ["2.png", "1.png"] and len(got.skipped) == 1
    assert len(calibration_images(tmp_path / "a", limit=1).images) == 1
    assert calibration_images(got, limit=1).files == got.files[:1]  # already decoded: passed through
    (tmp_path / "audio").mkdir()
    media.write_wav(tmp_path / "audio" / "a.wav", np.zeros(10), 8000)
    with pytest.raises(CalibrationError, match="audio, not images"):
        calibration_images(tmp_path / "audio")


def test_eval_skips_an_unreadable_audio_clip(tmp_path, caplog):
    """An audio ImageFolder with a broken clip: decoded once at load (the clip skipped and counted,
    its label dropped), resampled per model later."""
    import logging
    from types import SimpleNamespace

    from mmdeploy.stages.eval import _media_samples, load_data

    for cls, rate in (("bell", 8000), ("noise", 16000)):
        (tmp_path / cls).mkdir()
        media.write_wav(tmp_path / cls / "a.wav", 0.1 * np.sin(np.arange(rate) * 0.3), rate)
    (tmp_path / "bell" / "b.wav").write_bytes(b"RIFF not a wav")
    data = load_data(tmp_path)
    assert data.dataset.labels == [0, 1] and [s["file"] for s in data.skipped] == [str(tmp_path / "bell" / "b.wav")]
    assert media.skipped_note(data.skipped).startswith(f"skipped 1 unreadable file: first: {tmp_path / 'bell' / 'b.wav'}")
    subject = SimpleNamespace(adapter=SimpleNamespace(features=SimpleNamespace(sampling_rate=16000)), label="clap")
    with caplog.at_level(logging.WARNING, logger="mmdeploy.audio"):
        clips = _media_samples(subject, data, "audio")
    assert [c.shape for c in clips] == [(16000,), (16000,)] and "a.wav: sample rate 8000 Hz" in caplog.text
    with pytest.raises(InputError, match="b.wav"):
        load_data(tmp_path, strict=True)
