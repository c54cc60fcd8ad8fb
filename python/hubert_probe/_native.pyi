"""Type stubs of the Rust extension behind ``hubert_probe`` (see docs/PYTHON.md)."""

from os import PathLike
from typing import Any, Dict, List, Literal, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

#: The rate every model runs at, in Hz (other rates are resampled to it).
SAMPLE_RATE: int
__version__: str

#: One clip (1-D), or a batch of equal-length clips (2-D ``[N, samples]``).
AudioArray = Union[
    npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.int16]
]
#: ``"last"`` (last_hidden_state), ``"all"`` (every hidden state), an index or a list of them
#: (``0`` = the transformer's input, ``i`` = the output of layer ``i``), or ``"0,6,12"``.
Layers = Union[Literal["last", "all"], str, int, Sequence[int]]

class ModelInfo(TypedDict):
    model: str
    revision: Union[str, None]
    family: str
    num_layers: int
    num_hidden_states: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    conv_dim: List[int]
    conv_kernel: List[int]
    conv_stride: List[int]
    do_stable_layer_norm: bool
    feat_extract_norm: str
    do_normalize: bool
    num_parameters: int
    sample_rate: int
    frame_rate_hz: float
    min_samples: int
    dtype: str
    device: str
    config: str
    weights: str

class Model:
    """A loaded checkpoint in the hub layout (any architecture hubert-core loads)."""

    @staticmethod
    def from_pretrained(
        id_or_dir: str, dtype: str = "float32", device: str = "cpu"
    ) -> "Model":
        """Loads a local model directory or a hub id ``owner/name[@revision]``.

        ``dtype``: float32 / f32, bfloat16 / bf16, float16 / f16. ``device``: cpu, cuda, cuda:N.
        HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE are respected. Raises FileNotFoundError (no
        such directory, missing config.json or weights), OSError (hub) or ValueError (bad
        config, checkpoint, dtype or device).
        """
        ...
    def embed(
        self,
        audio: Union[AudioArray, Sequence[AudioArray]],
        sample_rate: int,
        layers: Layers = "last",
        batch_size: int = 8,
    ) -> npt.NDArray[np.float32]:
        """Frame means of the selected hidden states, ``[N, L, D]`` float32, in input order.

        ``audio``: a 1-D array (N = 1), a 2-D array ``[N, samples]`` or a list of 1-D arrays of
        any lengths; float32, float64 or int16 (scaled by 1/32768); mono. Any ``sample_rate``
        from 1 kHz to 768 kHz (resampled to 16 kHz as ``hubert embed`` resamples files).
        """
        ...
    @overload
    def frames(
        self,
        audio: AudioArray,
        sample_rate: int,
        layers: Layers = "last",
        batch_size: int = 8,
    ) -> Union[
        Tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]],
        List[Tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]],
    ]: ...
    @overload
    def frames(
        self,
        audio: Sequence[AudioArray],
        sample_rate: int,
        layers: Layers = "last",
        batch_size: int = 8,
    ) -> List[Tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]]:
        """Every frame: ``(frames [L, T, D] float32, timestamps_ms [T] float64)`` for a 1-D
        clip, a list of such pairs (one per clip) for a 2-D array or a list. Timestamps are
        frame centres at 16 kHz: ``(t * hop + receptive_field / 2) / 16`` ms (12.5 + 20 t for
        the HuBERT family)."""
        ...
    @property
    def info(self) -> ModelInfo:
        """Architecture, parameter count, provenance (hub id, revision), dtype and device."""
        ...
    @property
    def num_hidden_states(self) -> int:
        """Hidden states of ``layers="all"``: the layer count + 1."""
        ...
    @property
    def hidden_size(self) -> int:
        """Feature width D."""
        ...
    @property
    def sample_rate(self) -> int:
        """Always 16000."""
        ...

def load_audio(path: Union[str, "PathLike[str]"]) -> Tuple[npt.NDArray[np.float32], int]:
    """Decodes WAV / FLAC / MP3 / OGG Vorbis to 16 kHz mono float32: ``(samples, 16000)``.

    Raises FileNotFoundError, OSError or ValueError naming the file and the cause.
    """
    ...

def read_features(path: Union[str, "PathLike[str]"]) -> Dict[str, Any]:
    """A feature store or ``hubert embed`` output: each tensor by name (``features`` ``[N, L, D]``
    and ``labels`` ``[N]``, or ``pooled`` and ``frames.<i>``) as numpy arrays, and ``metadata``
    (JSON lists and objects decoded, other values as strings)."""
    ...
