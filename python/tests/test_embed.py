"""`Model.embed` / `Model.frames` against `hubert embed` (bit for bit at 16 kHz, 1e-5 when
resampled) and against transformers' outputs stored by scripts/make_fixtures.py (1e-4)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import hubert_probe
from conftest import AUDIO, CLIPS, FIXTURES, MODELS, cli_embed, read_safetensors, read_wav, write_wav_pcm16

TOL_TRANSFORMERS = 1e-4
TOL_RESAMPLED = 1e-5


def fixture_clips():
    """The fixture WAVs' samples in their own dtypes (int16 for PCM16, float32 for float)."""
    return [read_wav(AUDIO / f"{c}.wav")[0] for c in CLIPS]


@pytest.mark.parametrize("layers", ["last", "all", "0,2"])
def test_embed_equals_cli_bit_for_bit(models, arch, tmp_path, layers):
    files = [AUDIO / f"{c}.wav" for c in CLIPS]
    tensors, meta = cli_embed(tmp_path, MODELS[arch], files, layers=layers)
    ours = models[arch].embed(fixture_clips(), 16000, layers=layers)
    assert ours.dtype == np.float32
    assert ours.shape == tensors["pooled"].shape
    np.testing.assert_array_equal(ours, tensors["pooled"])


@pytest.mark.parametrize("layers", ["last", "all"])
def test_frames_equal_cli_bit_for_bit(models, arch, tmp_path, layers):
    files = [AUDIO / f"{c}.wav" for c in CLIPS]
    tensors, meta = cli_embed(tmp_path, MODELS[arch], files, layers=layers, frames=True)
    pairs = models[arch].frames(fixture_clips(), 16000, layers=layers)
    assert len(pairs) == len(CLIPS)
    for i, (frames, stamps) in enumerate(pairs):
        np.testing.assert_array_equal(frames, tensors[f"frames.{i}"])
        t = frames.shape[1]
        # Frame centres: receptive field 400 samples (25 ms), hop 320 samples (20 ms).
        np.testing.assert_allclose(stamps, 12.5 + 20.0 * np.arange(t), rtol=0, atol=1e-9)
    # One clip in: one pair out, equal to its row of the list.
    frames, stamps = models[arch].frames(fixture_clips()[2], 16000, layers=layers)
    np.testing.assert_array_equal(frames, pairs[2][0])
    np.testing.assert_array_equal(stamps, pairs[2][1])


def test_equals_transformers(models, arch):
    expected, _ = read_safetensors(FIXTURES / "expected.safetensors")
    model = models[arch]
    for clip, samples in zip(CLIPS, fixture_clips()):
        hidden = expected[f"{arch}.{clip}.hidden_states"]  # [L + 1, T, D]
        last = expected[f"{arch}.{clip}.last_hidden_state"]  # [T, D]
        frames, _ = model.frames(samples, 16000, layers="all")
        assert frames.shape == hidden.shape
        assert np.abs(frames - hidden).max() < TOL_TRANSFORMERS, clip
        frames, _ = model.frames(samples, 16000, layers="last")
        assert np.abs(frames[0] - last).max() < TOL_TRANSFORMERS, clip
        pooled = model.embed(samples, 16000, layers="all")
        assert pooled.shape == (1,) + hidden.shape[:1] + hidden.shape[2:]
        assert np.abs(pooled[0] - hidden.mean(axis=1)).max() < TOL_TRANSFORMERS, clip
        pooled = model.embed(samples, 16000)
        assert np.abs(pooled[0, 0] - last.mean(axis=0)).max() < TOL_TRANSFORMERS, clip


def test_resampled_44k_close_to_cli(models, arch, tmp_path):
    rng = np.random.default_rng(7)
    lengths = [44100, 57331, 30000]  # 1 s, an odd length, and one that resamples to 10884
    clips = [(rng.standard_normal(n) * 6000).clip(-32768, 32767).astype(np.int16) for n in lengths]
    files = []
    for i, clip in enumerate(clips):
        files.append(tmp_path / f"c{i}.wav")
        write_wav_pcm16(files[-1], clip, 44100)
    tensors, _ = cli_embed(tmp_path, MODELS[arch], files, layers="all", frames=True)
    ours = models[arch].embed(clips, 44100, layers="all")
    assert ours.shape == tensors["pooled"].shape
    assert np.abs(ours - tensors["pooled"]).max() < TOL_RESAMPLED
    for i, (frames, _) in enumerate(models[arch].frames(clips, 44100, layers="all")):
        assert frames.shape == tensors[f"frames.{i}"].shape
        assert np.abs(frames - tensors[f"frames.{i}"]).max() < TOL_RESAMPLED


def test_input_forms_agree(models):
    model = models["base"]
    rng = np.random.default_rng(3)
    batch = (rng.standard_normal((3, 8000)) * 0.1).astype(np.float32)
    # A 2-D batch (one forward pass) equals each row on its own to float rounding.
    together = model.embed(batch, 16000, layers="all")
    alone = np.concatenate([model.embed(row, 16000, layers="all") for row in batch])
    assert together.shape == (3, 3, 32)
    assert np.abs(together - alone).max() < 1e-5
    # A list of the rows is the same batch; a tuple too; float64 is cast to float32.
    np.testing.assert_array_equal(model.embed(list(batch), 16000, layers="all"), together)
    np.testing.assert_array_equal(model.embed(tuple(batch), 16000, layers="all"), together)
    np.testing.assert_array_equal(model.embed(batch.astype(np.float64), 16000, layers="all"), together)
    # Non-contiguous views are read in logical order.
    wide = np.zeros((3, 16000), dtype=np.float32)
    wide[:, ::2] = batch
    np.testing.assert_array_equal(model.embed(wide[:, ::2], 16000, layers="all"), together)
    # int16 is scaled by 1/32768, as a PCM16 file decodes.
    pcm = (rng.standard_normal(5000) * 3000).astype(np.int16)
    np.testing.assert_array_equal(
        model.embed(pcm, 16000), model.embed(pcm.astype(np.float32) / np.float32(32768), 16000)
    )
    # Layers as an int or a list of ints.
    np.testing.assert_array_equal(model.embed(batch, 16000, layers=2)[:, 0], together[:, 2])
    np.testing.assert_array_equal(model.embed(batch, 16000, layers=[2, 0]), together[:, [2, 0]])
    # Batch size changes nothing.
    np.testing.assert_array_equal(model.embed(list(batch), 16000, layers="all", batch_size=1), alone)


def test_short_clip_is_zero_padded(models):
    model = models["base"]
    short = np.linspace(-0.5, 0.5, 123, dtype=np.float32)
    padded = np.zeros(400, dtype=np.float32)
    padded[:123] = short
    np.testing.assert_array_equal(model.embed(short, 16000), model.embed(padded, 16000))
    frames, stamps = model.frames(short, 16000)
    assert frames.shape == (1, 1, 32) and list(stamps) == [12.5]


def test_info(models):
    info = models["base"].info
    assert info["family"] == "hubert"
    assert info["num_layers"] == 2 and info["num_hidden_states"] == 3
    assert info["hidden_size"] == 32 and models["base"].hidden_size == 32
    assert info["sample_rate"] == 16000 and info["frame_rate_hz"] == 50.0
    assert info["min_samples"] == 400
    assert info["dtype"] == "f32" and info["device"] == "cpu"
    assert info["revision"] is None
    assert info["model"] == str(MODELS["base"])
    assert info["do_stable_layer_norm"] is False
    assert models["large"].info["do_stable_layer_norm"] is True
    # The parameter count equals `hubert info`'s.
    import json

    from conftest import run_cli

    done = run_cli("info", "--json", "--model", str(MODELS["base"]))
    assert done.returncode == 0, done.stderr
    assert info["num_parameters"] == json.loads(done.stdout)["num_parameters"]
    assert "Model(" in repr(models["base"])


def test_bfloat16_loads(models):
    bf16 = hubert_probe.Model.from_pretrained(str(MODELS["base"]), dtype="bfloat16")
    assert bf16.info["dtype"] == "bf16"
    clip = read_wav(AUDIO / "one16000_pcm16.wav")[0]
    a, b = bf16.embed(clip, 16000, layers="all"), models["base"].embed(clip, 16000, layers="all")
    assert a.shape == b.shape and np.isfinite(a).all()
    assert np.abs(a - b).max() < 0.1  # bf16 rounding of the matrix products only


def test_load_audio_equals_cli_input(models, tmp_path):
    for clip in CLIPS:
        samples, rate = hubert_probe.load_audio(AUDIO / f"{clip}.wav")
        raw, _ = read_wav(AUDIO / f"{clip}.wav")
        want = raw.astype(np.float32) / np.float32(32768) if raw.dtype == np.int16 else raw
        assert rate == 16000 and samples.dtype == np.float32
        np.testing.assert_array_equal(samples, want)
    # A 44.1 kHz file comes back at 16 kHz, round(n * 16000 / 44100) samples.
    path = tmp_path / "x.wav"
    write_wav_pcm16(path, (np.sin(np.arange(44100) / 10) * 9000).astype(np.int16), 44100)
    samples, rate = hubert_probe.load_audio(str(path))
    assert rate == 16000 and len(samples) == 16000
    # ... and embedding it equals `hubert embed` on the file bit for bit.
    tensors, _ = cli_embed(tmp_path, MODELS["base"], [path])
    np.testing.assert_array_equal(models["base"].embed(samples, 16000), tensors["pooled"])


def test_read_features_of_cli_output(tmp_path):
    files = [AUDIO / f"{c}.wav" for c in CLIPS[:3]]
    tensors, meta = cli_embed(tmp_path, MODELS["base"], files, layers="all", frames=True)
    out = next(tmp_path.glob("cli_all_1.safetensors"))
    got = hubert_probe.read_features(out)
    np.testing.assert_array_equal(got["pooled"], tensors["pooled"])
    np.testing.assert_array_equal(got["frames.1"], tensors["frames.1"])
    md = got["metadata"]
    assert md["files"] == [str(f) for f in files]
    assert md["layer_indices"] == [0, 1, 2]
    assert md["layers"] == "all" and md["sample_rate"] == "16000"
    assert md["model"] == meta["model"]


def test_read_features_of_store(tmp_path):
    # Laid out as crates/pipeline/src/store.rs writes a store.
    features = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    labels = np.array([1, 0], dtype=np.int64)
    items = [
        {"path": "audio/a.wav", "label": 1, "split": "1", "group": None, "segment": None},
        {"path": "audio/b.wav", "label": 0, "split": "2", "group": None, "segment": None},
    ]
    meta = {
        "format": "hubert-probe.features/1",
        "task": "esc50",
        "model": "facebook/hubert-base-ls960",
        "revision": "",
        "layers": "all",
        "layer_indices": "[0,1,2]",
        "class_names": '["dog","rain"]',
        "items": __import__("json").dumps(items),
        "skipped": "[]",
        "padded": "[]",
    }
    path = tmp_path / "esc50_features_hubert_all.safetensors"
    from conftest import write_safetensors

    write_safetensors(path, {"features": features, "labels": labels}, meta)
    got = hubert_probe.read_features(path)
    np.testing.assert_array_equal(got["features"], features)
    np.testing.assert_array_equal(got["labels"], labels)
    assert got["labels"].dtype == np.int64
    md = got["metadata"]
    assert md["class_names"] == ["dog", "rain"] and md["items"] == items
    assert md["task"] == "esc50" and md["revision"] == "" and md["skipped"] == []


def test_gil_is_released_during_compute(models):
    model = models["base"]
    batch = np.random.default_rng(0).standard_normal((16, 160000)).astype(np.float32)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    time.sleep(0.02)
    start = time.perf_counter()
    model.embed(batch, 16000, layers="all", batch_size=4)
    end = time.perf_counter()
    stop.set()
    thread.join()
    assert end - start > 0.05, "the call was too quick to tell"
    inside = [t for t in ticks if start + 0.01 < t < end - 0.01]
    # With the GIL held for the whole call the other thread could not run at all.
    assert len(inside) >= 3, (end - start, len(inside))
