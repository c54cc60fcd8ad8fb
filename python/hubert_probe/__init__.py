"""hubert-probe in Python: the exact, fast HuBERT-family encoder with numpy in and out.

The model runs in Rust (the ``hubert_core`` crate, through a PyO3 extension); results equal
``hubert embed`` bit for bit on 16 kHz input, and transformers within 1e-4.

>>> import numpy as np, hubert_probe
>>> model = hubert_probe.Model.from_pretrained("facebook/hubert-base-ls960")
>>> audio, sr = hubert_probe.load_audio("clip.wav")          # 16 kHz mono float32
>>> model.embed(audio, sr, layers="all").shape              # [N, L, D]: frame means
(1, 13, 768)
>>> frames, timestamps_ms = model.frames(audio, sr)          # [L, T, D], [T]

``hubert_probe.hear`` is the HEAR 2021 API (needs torch).
"""

from ._native import SAMPLE_RATE, Model, __version__, load_audio, read_features

__all__ = ["Model", "load_audio", "read_features", "SAMPLE_RATE", "__version__"]
