"""Shared helpers of the binding's tests: fixture paths, a numpy-only WAV and safetensors reader
(independent of the code under test), WAV writing, and running the `hubert` command line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "hubert-core" / "tests" / "fixtures"
AUDIO = FIXTURES / "audio"
#: The tiny fixture models (scripts/make_fixtures.py): post-LN group-norm and pre-LN layer-norm.
MODELS = {"base": FIXTURES / "tiny-base", "large": FIXTURES / "tiny-large"}
#: The fixture clips, in the order the parity tests use.
CLIPS = ["min400_pcm16", "odd1234_float", "half8000_pcm16", "one16000_float", "one16000_pcm16"]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples of a mono PCM16 (int16) or IEEE float32 WAV, in the file's own dtype."""
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", path
    pos, fmt, rate, body = 12, None, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", chunk[:8])
            bits = struct.unpack("<H", chunk[14:16])[0]
            if fmt == 0xFFFE:
                fmt = struct.unpack("<H", chunk[24:26])[0]
            assert channels == 1, path
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt == 1 and bits == 16:
        return np.frombuffer(body, dtype="<i2").copy(), rate
    if fmt == 3 and bits == 32:
        return np.frombuffer(body, dtype="<f4").copy(), rate
    raise AssertionError(f"{path}: unexpected WAV format {fmt}/{bits}")


def write_wav_pcm16(path: Path, samples: np.ndarray, rate: int) -> None:
    """A mono 16-bit PCM WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """Tensors (numpy) and metadata of a safetensors file, parsed here with numpy only."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        raw = data[8 + n + a : 8 + n + b]
        tensors[name] = np.frombuffer(raw, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors, meta


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """A safetensors file (for stores written the way the pipeline lays them out)."""
    names = {"float32": "F32", "int64": "I64"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": names[arr.dtype.name],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def hubert_bin() -> Path:
    """The `hubert` binary: $HUBERT_BIN, else the newest of target/{debug,release}/hubert."""
    env = os.environ.get("HUBERT_BIN")
    if env:
        path = Path(env)
        if not path.is_absolute():
            path = ROOT / path
        assert path.is_file(), f"HUBERT_BIN={env} does not exist"
        return path
    found = [p for p in (ROOT / "target" / d / "hubert" for d in ("debug", "release")) if p.is_file()]
    if not found:
        pytest.fail(
            "the `hubert` binary is needed to compare with the command line: "
            "run `cargo build -p hubert` (or set HUBERT_BIN)"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs `hubert ARGS...` and returns the finished process (output captured as text)."""
    return subprocess.run(
        [str(hubert_bin()), *args], capture_output=True, text=True, env={**os.environ}
    )


def cli_embed(tmp_path: Path, model: Path, files: list, layers: str = "last", frames: bool = False):
    """`hubert embed` on `files`: its tensors and metadata."""
    out = tmp_path / f"cli_{layers.replace(',', '_')}_{int(frames)}.safetensors"
    args = ["embed", "--model", str(model), "--layers", layers, "--output", str(out)]
    if frames:
        args.append("--frames")
    done = run_cli(*args, *[str(f) for f in files])
    assert done.returncode == 0, done.stderr
    return read_safetensors(out)


@pytest.fixture(scope="session", params=sorted(MODELS))
def arch(request) -> str:
    """Each tiny fixture architecture in turn."""
    return request.param


@pytest.fixture(scope="session")
def models():
    """The fixture models, loaded once per session."""
    import hubert_probe

    return {name: hubert_probe.Model.from_pretrained(str(d)) for name, d in MODELS.items()}
