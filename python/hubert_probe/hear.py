"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over hubert-probe's encoder.

hear-eval-kit and ``hear-validator`` import a module and call three functions::

    model = load_model("facebook/hubert-base-ls960", layer="all")   # a torch.nn.Module
    emb, ts = get_timestamp_embeddings(audio, model)    # [n, T, D] float32, [n, T] ms
    scene = get_scene_embeddings(audio, model)          # [n, D] float32

``audio`` is a torch tensor ``[n_sounds, n_samples]`` at 16 kHz (``model.sample_rate``), any
length, on any device; results come back on the audio's device. The encoder itself runs in Rust
on the device given to :func:`load_model` (``device="cpu"`` by default; ``"cuda:N"`` needs a CUDA
build of the wheel), through the same embedding loop as ``hubert embed``: equal-length clips are
batched ``batch_size`` at a time and at most ``batch_size x 30 s`` of audio per forward pass, so
memory is bounded by the batch, not by the number of clips (one very long clip still runs whole:
attention memory grows with the square of its frames).

Layers (``layer=``): ``"last"`` (``last_hidden_state``, the default), a hidden-state index
``0..num_layers`` (``0`` is the transformer's input, ``i`` the output of layer ``i``), a list of
indices, or ``"all"`` (every hidden state). Several layers are concatenated along the feature axis,
hidden state by hidden state, so ``timestamp_embedding_size = scene_embedding_size = layers x D``.

Timestamps are the centres of the model's frames in milliseconds (20 ms apart for the HuBERT
family, the first at 12.5 ms); scene embeddings are the frame means of the same hidden states.

torch is needed for this module only: ``pip install "hubert-probe[hear]"``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised where torch is absent
    raise ImportError(
        "hubert_probe.hear needs torch: pip install 'hubert-probe[hear]' (or pip install torch)"
    ) from e

from ._native import Model

__all__ = [
    "DEFAULT_MODEL",
    "HearModel",
    "load_model",
    "get_timestamp_embeddings",
    "get_scene_embeddings",
]

#: The checkpoint ``load_model()`` loads when given no path.
DEFAULT_MODEL = "facebook/hubert-base-ls960"

Layer = Union[str, int, Sequence[int]]


def _layer_selection(layer: Layer, num_hidden_states: int) -> Tuple[Union[str, List[int]], int]:
    """The `layers=` argument of Model.embed/frames for `layer`, and the number of layers."""
    if isinstance(layer, str):
        name = layer.strip()
        if name == "last":
            return "last", 1
        if name == "all":
            return "all", num_hidden_states
        try:
            indices = [int(p) for p in name.split(",")]
        except ValueError:
            raise ValueError(
                f"layer {layer!r}: expected 'last', 'all', a hidden-state index or a list of them"
            ) from None
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        indices = [int(layer)]
    else:
        try:
            indices = [int(i) for i in layer]
        except TypeError:
            raise TypeError(
                f"layer must be 'last', 'all', an int or a list of ints, not {type(layer).__name__}"
            ) from None
    if not indices:
        raise ValueError("layer: no hidden-state index given")
    for i in indices:
        if not 0 <= i < num_hidden_states:
            raise ValueError(
                f"layer: hidden-state index {i} out of range: the model has "
                f"{num_hidden_states} hidden states (0..={num_hidden_states - 1})"
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"layer: an index is given twice in {indices}")
    return indices, len(indices)


class HearModel(torch.nn.Module):
    """A loaded hubert-probe model with the attributes HEAR asks for.

    It has no torch parameters: ``.to(device)`` is accepted (and returns the module), and
    embeddings are returned on the device of the audio passed in.
    """

    #: The rate the audio must have (HEAR resamples datasets to it).
    sample_rate: int = 16000

    def __init__(self, model: Model, layer: Layer = "last", batch_size: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.layer = layer
        self.layers, num_layers = _layer_selection(layer, model.num_hidden_states)
        self.batch_size = int(batch_size)
        #: Width of each timestamp embedding: stored layers x hidden size.
        self.timestamp_embedding_size: int = int(num_layers * model.hidden_size)
        #: Width of each scene embedding (the same hidden states, averaged over frames).
        self.scene_embedding_size: int = self.timestamp_embedding_size

    def extra_repr(self) -> str:
        return f"{self.model!r}, layer={self.layer!r}, batch_size={self.batch_size}"

    def forward(self, audio: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Same as ``get_timestamp_embeddings(audio, self)``."""
        return get_timestamp_embeddings(audio, self)


def load_model(
    model_file_path: str = "",
    *,
    layer: Layer = "last",
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int = 8,
) -> HearModel:
    """Loads a model for HEAR.

    ``model_file_path`` is a local model directory (config.json + model.safetensors or
    pytorch_model.bin) or a hub id (``owner/name[@revision]``); empty means
    :data:`DEFAULT_MODEL`. ``layer`` picks the hidden states (see the module docs), ``dtype``
    and ``device`` are those of :meth:`hubert_probe.Model.from_pretrained`.
    """
    spec = model_file_path or DEFAULT_MODEL
    model = Model.from_pretrained(spec, dtype=dtype, device=device)
    return HearModel(model, layer=layer, batch_size=batch_size)


def _audio_numpy(audio: torch.Tensor) -> np.ndarray:
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"audio must be a torch.Tensor, not {type(audio).__name__}")
    if audio.ndim != 2:
        raise ValueError(
            f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}"
        )
    if audio.shape[0] == 0:
        raise ValueError("audio holds no sound (n_sounds = 0)")
    return audio.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def _check(model: HearModel) -> None:
    if not isinstance(model, HearModel):
        raise TypeError(
            f"model must come from hubert_probe.hear.load_model, not {type(model).__name__}"
        )


def get_timestamp_embeddings(
    audio: torch.Tensor, model: HearModel
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frame embeddings ``[n, T, D]`` (float32) and their centres in ms ``[n, T]`` (float32)."""
    _check(model)
    x = _audio_numpy(audio)
    pairs = model.model.frames(
        x, model.sample_rate, layers=model.layers, batch_size=model.batch_size
    )
    frames = np.stack([f for f, _ in pairs])  # [n, L, T, D]
    n, num_layers, t, d = frames.shape
    embeddings = np.ascontiguousarray(frames.transpose(0, 2, 1, 3)).reshape(n, t, num_layers * d)
    timestamps = np.stack([ts for _, ts in pairs]).astype(np.float32)
    return (
        torch.from_numpy(embeddings).to(audio.device),
        torch.from_numpy(timestamps).to(audio.device),
    )


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound, ``[n, D]`` float32: the frame mean of each selected hidden state."""
    _check(model)
    x = _audio_numpy(audio)
    pooled = model.model.embed(
        x, model.sample_rate, layers=model.layers, batch_size=model.batch_size
    )  # [n, L, D]
    n = pooled.shape[0]
    return torch.from_numpy(np.ascontiguousarray(pooled).reshape(n, -1)).to(audio.device)
