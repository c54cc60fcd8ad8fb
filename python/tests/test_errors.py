"""Bad input raises Python exceptions whose messages are the Rust ones (a bad file names the
file), never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import hubert_probe
from conftest import AUDIO, MODELS, run_cli


def test_bad_model_paths(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        hubert_probe.Model.from_pretrained(str(missing))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found") as err:
        hubert_probe.Model.from_pretrained(str(empty))
    assert str(empty) in str(err.value)
    # The same message as the command line's.
    done = run_cli("info", "--model", str(empty))
    assert done.returncode != 0 and str(err.value) in done.stderr


def test_bad_config_names_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in MODELS["base"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="config.json"):
        hubert_probe.Model.from_pretrained(str(bad))
    (bad / "config.json").write_bytes((MODELS["base"] / "config.json").read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="model.safetensors"):
        hubert_probe.Model.from_pretrained(str(bad))


def test_bad_dtype_and_device():
    with pytest.raises(ValueError, match="unknown dtype"):
        hubert_probe.Model.from_pretrained(str(MODELS["base"]), dtype="float8")
    with pytest.raises(ValueError, match="unknown device"):
        hubert_probe.Model.from_pretrained(str(MODELS["base"]), device="tpu")


def test_bad_audio(models):
    model = models["base"]
    ok = np.zeros(800, dtype=np.float32)
    with pytest.raises(ValueError, match="3 dimensions"):
        model.embed(np.zeros((1, 2, 800), dtype=np.float32), 16000)
    with pytest.raises(TypeError, match="dtype int32"):
        model.embed(np.zeros(800, dtype=np.int32), 16000)
    with pytest.raises(TypeError, match="numpy array"):
        model.embed("clip.wav", 16000)
    with pytest.raises(ValueError, match="clip 1: sample 5 is NaN"):
        bad = ok.copy()
        bad[5] = np.nan
        model.embed([ok, bad], 16000)
    with pytest.raises(ValueError, match="inf"):
        model.embed(np.full(800, np.inf, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="clip 0 is empty"):
        model.embed(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="no clip"):
        model.embed([], 16000)
    with pytest.raises(ValueError, match=r"audio\[1\] has 2 dimensions"):
        model.embed([ok, np.zeros((2, 800), dtype=np.float32)], 16000)
    for rate in (0, 999, 768001):
        with pytest.raises(ValueError, match="sample_rate"):
            model.embed(ok, rate)
    with pytest.raises(OverflowError):
        model.embed(ok, -16000)
    with pytest.raises(ValueError, match="batch_size"):
        model.embed(ok, 16000, batch_size=0)


def test_bad_layers(models):
    model = models["base"]
    ok = np.zeros(800, dtype=np.float32)
    with pytest.raises(ValueError, match="index 3 out of range"):
        model.embed(ok, 16000, layers=3)
    with pytest.raises(ValueError, match="given twice"):
        model.frames(ok, 16000, layers=[1, 1])
    with pytest.raises(ValueError, match="expected `last`, `all` or indices"):
        model.embed(ok, 16000, layers="first")


def test_bad_audio_files(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        hubert_probe.load_audio(missing)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(ValueError) as err:
        hubert_probe.load_audio(junk)
    assert str(junk) in str(err.value)
    # The command line stops on the same file with the same message.
    out = tmp_path / "o.safetensors"
    done = run_cli("embed", "--model", str(MODELS["base"]), "-o", str(out), str(junk))
    assert done.returncode != 0 and str(err.value) in done.stderr


def test_bad_feature_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        hubert_probe.read_features(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="junk.safetensors: not a safetensors file"):
        hubert_probe.read_features(junk)
    # A valid safetensors file that is none of ours.
    from conftest import write_safetensors

    other = tmp_path / "other.safetensors"
    write_safetensors(other, {"w": np.zeros(3, dtype=np.float32)}, {})
    with pytest.raises(ValueError, match="not a hubert-probe feature store"):
        hubert_probe.read_features(other)
    with pytest.raises(ValueError, match="not a safetensors file"):
        hubert_probe.read_features(AUDIO / "min400_pcm16.wav")
