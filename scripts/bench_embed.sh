#!/usr/bin/env bash
# Whole-process comparison: `hubert embed` vs the Python way (scripts/embed_torch.py: soundfile +
# librosa + transformers), over the same file list, 2 threads each, fp32 and bf16. Reports wall
# time (model load, decode, resample, forward, pooling, writing) and peak RSS from
# /usr/bin/time, as a Markdown table.
#
#   scripts/bench_embed.sh [MODEL_DIR] [FILES] [SECONDS]
#
# Makes FILES (default 40) ESC-50-like clips: SECONDS (default 5) s, 44.1 kHz, 16-bit PCM WAV.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath -m "${1:-models/hubert-base-random}")
N=${2:-40}
SECS=${3:-5}
THREADS=${THREADS:-2}
DIR=$(mktemp -d)
python3 - "$DIR" "$N" "$SECS" <<'PY'
import sys
import numpy as np, soundfile as sf
d, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(n):
    rng = np.random.default_rng(i)
    t = np.arange(int(secs * 44100)) / 44100
    x = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(f"{d}/clip{i:03d}.wav", x.astype(np.float32), 44100, subtype="PCM_16")
PY
cargo build --release -p hubert >/dev/null 2>&1
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$DIR/time" "$@" >/dev/null 2>"$DIR/err" || { cat "$DIR/err"; exit 1; }
  read -r wall kib <"$DIR/time"
  echo "$label $wall $kib"
}
{
  for dtype in f32 bf16; do
    measure "hubert-embed-$dtype" target/release/hubert embed --model "$MODEL" --dtype "$dtype" \
      -o "$DIR/ours.safetensors" "$DIR"/clip*.wav
    measure "python-$dtype" python3 scripts/embed_torch.py --model "$MODEL" --dtype "$dtype" \
      --threads "$THREADS" -o "$DIR/torch.npy" "$DIR"/clip*.wav
  done
} >"$DIR/results"
python3 - "$DIR/results" "$N" "$SECS" <<'PY'
import sys
rows = {l.split()[0]: (float(l.split()[1]), int(l.split()[2]) / 1024) for l in open(sys.argv[1])}
n, secs = int(sys.argv[2]), float(sys.argv[3])
print(f"{n} files x {secs:g} s (44.1 kHz PCM16 WAV), whole process incl. model load")
print()
print("| dtype | hubert embed wall | Python wall | speed-up | hubert embed peak RSS | Python peak RSS |")
print("|---|---|---|---|---|---|")
for d in ["f32", "bf16"]:
    (ow, orss), (pw, prss) = rows[f"hubert-embed-{d}"], rows[f"python-{d}"]
    print(f"| {d} | {ow:.1f} s | {pw:.1f} s | {pw / ow:.2f}x | {orss:.0f} MiB | {prss:.0f} MiB |")
PY
rm -rf "$DIR"
