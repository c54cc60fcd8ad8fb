#!/usr/bin/env python3
"""Generate the audio-io test fixtures and their Python reference outputs.

Writes into crates/audio-io/tests/fixtures/ (all deterministic, seeded, tens of KB each):

* Quality fixtures (WAV, 16-bit PCM) at 44.1 / 48 / 22.05 / 8 kHz, mono and stereo, holding a
  speech-like mixture (harmonic tones with vibrato and envelopes plus low-passed noise), and
  for each the output of ``librosa.load(path, sr=16000)`` (librosa's default resampler,
  soxr_hq) as raw little-endian float32 (``*.librosa16k.f32``).
* Codec fixtures: FLAC (16 kHz mono, 44.1 kHz stereo), MP3 and OGG Vorbis (44.1 kHz mono),
  written with soundfile (libsndfile), each with ``librosa.load(path, sr=16000)`` as reference.
* ``manifest.json``: for every fixture its file, sample rate, channels, frames, and the
  reference file with its length and the librosa/soundfile/soxr versions that produced it.

Run from the repository root:  python3 scripts/make_audio_fixtures.py
The Rust tests (crates/audio-io/tests/quality.rs, formats.rs) read only these files; no
expected number is written by hand.
"""

import json
import os
import sys

import numpy as np
import soundfile as sf
import scipy.signal

import librosa

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "audio-io", "tests", "fixtures")


def speechlike(sr: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    """Harmonic 'voiced' segments (f0 110-220 Hz with vibrato, harmonics falling 6 dB/oct up to
    ~4 kHz), syllable-rate envelopes, plus noise low-passed at 3.4 kHz, peak 0.7."""
    rng = np.random.default_rng(seed)
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    out = np.zeros((channels, n))
    for c in range(channels):
        f0 = rng.uniform(110, 220) * (1 + 0.03 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voiced = np.zeros(n)
        for h in range(1, 30):
            if h * 220 > min(4000, 0.45 * sr):
                break
            voiced += np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h
        env = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t + rng.uniform(0, 6)))  # 4 syllables/s
        noise = rng.standard_normal(n)
        b, a = scipy.signal.butter(6, min(3400, 0.4 * sr) / (sr / 2))
        noise = scipy.signal.lfilter(b, a, noise)
        x = voiced * env + 0.3 * noise * (1 - env)
        out[c] = x
    out *= 0.7 / np.max(np.abs(out))
    return out


def write_reference(path: str) -> dict:
    y, sr = librosa.load(path, sr=16000)  # librosa's defaults: mono=True, res_type='soxr_hq'
    assert sr == 16000
    ref = path + ".librosa16k.f32"
    y.astype("<f4").tofile(ref)
    return {"reference": os.path.basename(ref), "reference_len": int(len(y))}


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    entries = []

    def add(name: str, data: np.ndarray, sr: int, fmt: str, subtype: str, **kw) -> None:
        path = os.path.join(OUT, name)
        sf.write(path, data.T, sr, format=fmt, subtype=subtype, **kw)
        info = sf.info(path)
        entry = {
            "file": name,
            "sample_rate": sr,
            "channels": int(data.shape[0]),
            "frames": int(info.frames),
            "format": fmt,
            "subtype": subtype,
        }
        entry.update(write_reference(path))
        entries.append(entry)

    # Quality fixtures: 0.5 s each keeps the WAVs at 8-96 KB.
    add("speech_44k1_mono.wav", speechlike(44100, 0.5, 1, 1), 44100, "WAV", "PCM_16")
    add("speech_48k_stereo.wav", speechlike(48000, 0.5, 2, 2), 48000, "WAV", "PCM_16")
    add("speech_22k05_mono.wav", speechlike(22050, 0.8, 1, 3), 22050, "WAV", "PCM_16")
    add("speech_8k_mono.wav", speechlike(8000, 1.0, 1, 4), 8000, "WAV", "PCM_16")
    # Codec fixtures.
    add("speech_16k_mono.flac", speechlike(16000, 1.0, 1, 5), 16000, "FLAC", "PCM_16")
    add("speech_44k1_stereo.flac", speechlike(44100, 0.4, 2, 6), 44100, "FLAC", "PCM_16")
    add("speech_44k1_mono.mp3", speechlike(44100, 1.0, 1, 7), 44100, "MP3", "MPEG_LAYER_III")
    add("speech_44k1_mono.ogg", speechlike(44100, 1.0, 1, 8), 44100, "OGG", "VORBIS")

    manifest = {
        "generator": "scripts/make_audio_fixtures.py",
        "librosa": librosa.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "numpy": np.__version__,
        "reference": "librosa.load(path, sr=16000) -> little-endian float32",
        "fixtures": entries,
    }
    try:
        import soxr

        manifest["soxr"] = soxr.__version__
    except ImportError:
        pass
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    for e in entries:
        size = os.path.getsize(os.path.join(OUT, e["file"]))
        print(f"{e['file']:28s} {size/1024:6.1f} KB  {e['frames']} frames  ref {e['reference_len']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
