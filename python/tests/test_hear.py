"""`hubert_probe.hear`, the HEAR 2021 API: needs torch, so these tests run only where torch is
installed (CI's venv has numpy only: they are reported as skipped there)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed: HEAR API tests (hubert_probe.hear) skipped"
)

from conftest import MODELS  # noqa: E402

import hubert_probe  # noqa: E402
from hubert_probe import hear  # noqa: E402


@pytest.fixture(scope="module")
def audio():
    g = torch.Generator().manual_seed(0)
    return torch.rand((3, 32000), generator=g) * 2 - 1


def test_load_model_attributes():
    model = hear.load_model(str(MODELS["base"]))
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 32 and model.timestamp_embedding_size == 32
    assert isinstance(model.scene_embedding_size, int)
    assert model.to("cpu") is model and model.to(torch.device("cpu")) is model
    everything = hear.load_model(str(MODELS["large"]), layer="all")
    assert everything.timestamp_embedding_size == 3 * 32 == everything.scene_embedding_size
    assert hear.load_model(str(MODELS["base"]), layer=[0, 2]).scene_embedding_size == 64


def test_timestamp_embeddings(audio):
    model = hear.load_model(str(MODELS["base"]), layer="all")
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    assert emb.shape == (3, 99, 96) and ts.shape == (3, 99)
    diffs = torch.diff(ts)
    assert torch.all((diffs - 20.0).abs() < 1e-4) and float(ts[0, 0]) == 12.5
    # Layers are concatenated along the feature axis, hidden state by hidden state.
    pairs = model.model.frames(audio.numpy(), 16000, layers="all")
    for i, (frames, stamps) in enumerate(pairs):
        for layer in range(3):
            np.testing.assert_array_equal(emb[i, :, 32 * layer : 32 * (layer + 1)].numpy(), frames[layer])
        np.testing.assert_array_equal(ts[i].numpy(), stamps.astype(np.float32))
    # forward() is the same call.
    np.testing.assert_array_equal(model(audio)[0].numpy(), emb.numpy())


def test_scene_embeddings(audio):
    model = hear.load_model(str(MODELS["large"]), layer=1)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (3, 32)
    direct = hubert_probe.Model.from_pretrained(str(MODELS["large"])).embed(audio.numpy(), 16000, layers=1)
    np.testing.assert_array_equal(scene.numpy(), direct[:, 0])
    # The scene embedding is the frame mean of the timestamp embeddings.
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    assert (emb.mean(dim=1) - scene).abs().max() < 1e-5


def test_any_length_and_dtype(audio):
    model = hear.load_model(str(MODELS["base"]))
    short = hear.get_scene_embeddings(audio[:, :100].double(), model)  # below one frame: padded
    assert short.shape == (3, 32) and short.dtype == torch.float32
    emb, ts = hear.get_timestamp_embeddings(audio[:1, :12345], model)
    assert emb.shape[:2] == ts.shape == (1, 38)


def test_bad_input():
    model = hear.load_model(str(MODELS["base"]))
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(TypeError, match="torch.Tensor"):
        hear.get_scene_embeddings(np.zeros((1, 16000), dtype=np.float32), model)
    with pytest.raises(ValueError, match="out of range"):
        hear.load_model(str(MODELS["base"]), layer=3)
    with pytest.raises(ValueError, match="expected 'last', 'all'"):
        hear.load_model(str(MODELS["base"]), layer="middle")
    with pytest.raises(FileNotFoundError):
        hear.load_model("/no/such/model")
