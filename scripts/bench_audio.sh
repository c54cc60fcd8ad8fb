#!/usr/bin/env bash
# Audio decode + resample benchmark: audio-io against librosa.load(path, sr=16000), side by
# side in one run on the same files.
#
#   scripts/bench_audio.sh            # 200 clips of 5 s, 44.1 kHz, 16-bit mono
#   N=50 scripts/bench_audio.sh       # fewer clips
#   PASSES=9 scripts/bench_audio.sh   # best of 9 passes on each side (default 5)
#
# 1. generates the clips into bench-out/audio_clips/ (git-ignored; speech-like, seeded),
# 2. runs crates/audio-io/benches/decode_resample.rs (`run` mode: audio_io::load on one
#    thread, then load_many on rayon's pool),
# 3. runs scripts/bench_librosa.py (one process, BLAS/OpenMP threads pinned to 1),
#    both sides reporting the best of PASSES passes over all clips,
# 4. prints a Markdown table: clips/s and audio-seconds/s, per core, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
DIR="$PWD/bench-out/audio_clips"
OUT="$PWD/bench-out"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p "$DIR"

python3 - "$DIR" "$N" <<'PY'
import os, sys
import numpy as np, soundfile as sf
out, n = sys.argv[1], int(sys.argv[2])
sr, seconds = 44100, 5.0
rng = np.random.default_rng(2026)
t = np.arange(int(sr * seconds)) / sr
for i in range(n):
    path = os.path.join(out, f"clip_{i:04d}.wav")
    if os.path.exists(path):
        continue
    f0 = rng.uniform(100, 250)
    x = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6)) / h for h in range(1, 12))
    x = x * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(2, 5) * t)) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, (0.7 * x / np.max(np.abs(x))).astype(np.float32), sr, subtype="PCM_16")
PY

cargo bench -q -p audio-io --bench decode_resample -- run "$DIR" > "$OUT/audio_rust.jsonl"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
    python3 scripts/bench_librosa.py "$DIR" > "$OUT/audio_librosa.json"

python3 - "$OUT/audio_rust.jsonl" "$OUT/audio_librosa.json" <<'PY'
import json, sys
rust = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = json.loads(open(sys.argv[2]).read())
base = ref["clips_per_s"]  # librosa runs on one core
rows = [("librosa.load(sr=16000) (soxr_hq)", 1, ref)] + [
    (f"audio_io::{'load' if r['mode'] == 'sequential' else 'load_many'}", r["threads"], r) for r in rust
]
print(f"{ref['clips']} clips x {ref['audio_seconds'] / ref['clips']:.1f} s, 44.1 kHz 16-bit mono WAV -> 16 kHz mono f32"
      f" (librosa {ref['librosa']}, soxr {ref['soxr']})\n")
print("| implementation | cores | clips/s | audio-s/s | clips/s per core | audio-s/s per core | per-core ratio vs librosa |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, cores, r in rows:
    print(f"| {name} | {cores} | {r['clips_per_s']:.0f} | {r['audio_s_per_s']:.0f} | "
          f"{r['clips_per_s'] / cores:.0f} | {r['audio_s_per_s'] / cores:.0f} | "
          f"{r['clips_per_s'] / cores / base:.2f}x |")
PY
