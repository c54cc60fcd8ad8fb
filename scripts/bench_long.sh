#!/usr/bin/env bash
# Long clips side by side: `hubert embed` vs transformers (sdpa attention), wall time and peak
# RSS (/usr/bin/time -v), 2 threads each, plus the deviation of chunked embedding from the
# full-context result on 20-60 s clips. Prints Markdown for docs/PERFORMANCE.md.
#
#   scripts/bench_long.sh [MODEL_DIR] [EXACT_MINUTES] [CHUNKED_MINUTES]
#
# 1. exact: an EXACT_MINUTES-minute clip (default 10) whole, ours (tiled attention) then
#    transformers with sdpa (eager would need 12 x T^2 x 4 B of scores: 43 GB at 10 minutes);
# 2. chunked: a CHUNKED_MINUTES-minute clip (default 60) with --chunk-seconds 30
#    --chunk-overlap 2, ours then transformers on the same windows (scripts/embed_long_torch.py);
# 3. deviation: ours on clips of 20, 30, 40, 50, 60 s whole vs --chunk-seconds 10
#    --chunk-overlap 2, relative L2 of the pooled vectors of every hidden state.
# Pooled last-layer vectors of ours and transformers are compared too (max abs difference).
# Set STEPS=exact,chunked,deviation to pick steps. The clips are synthetic speech-like
# signals (harmonics with moving pitch, syllable-rate envelope, noise), seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath -m "${1:-models/hubert-base-random}")
EXACT_MIN=${2:-10}
CHUNKED_MIN=${3:-60}
STEPS=${STEPS:-exact,chunked,deviation}
THREADS=${THREADS:-2}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
BIN=${BIN:-target/release/hubert}
if [ ! -f "$MODEL/config.json" ]; then
  python3 scripts/make_fixtures.py --skip-tiny --full-size "$MODEL"
fi
[ -x "$BIN" ] || cargo build --release -p hubert
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
python3 - "$OUT" "$EXACT_MIN" "$CHUNKED_MIN" <<'PY'
import sys
import numpy as np, soundfile as sf
out, exact, chunked = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def clip(seconds, seed):
    r = np.random.RandomState(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.3 * t + r.rand() * 6)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + r.rand() * 6)
    return (0.1 * env * voiced + 0.01 * r.randn(n)).astype("float32")
sf.write(f"{out}/exact.wav", clip(exact * 60, 0), 16000)
sf.write(f"{out}/chunked.wav", clip(chunked * 60, 1), 16000)
for s in (20, 30, 40, 50, 60):
    sf.write(f"{out}/dev{s}.wav", clip(s, s), 16000)
PY
# Runs a command under /usr/bin/time -v; prints "wall_s peak_mib".
timed() {
  local log=$1; shift
  /usr/bin/time -v "$@" >"$log.out" 2>"$log.err" || { cat "$log.err" >&2; exit 1; }
  python3 - "$log.err" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
w = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
wall = int(w.group(1) or 0) * 3600 + int(w.group(2)) * 60 + float(w.group(3))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(f"{wall:.1f} {rss / 1024:.0f}")
PY
}
compare() {
  python3 - "$1" "$2" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
ours = load_file(sys.argv[1])["pooled"][0, -1]
theirs = np.load(sys.argv[2])
print(f"{np.abs(ours - theirs).max():.2e}")
PY
}
echo "model: $MODEL, threads: $THREADS, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $STEPS == *exact* ]]; then
  echo
  echo "| ${EXACT_MIN}-minute clip, whole | wall | peak RSS | max abs diff of pooled last layer |"
  echo "|---|---:|---:|---:|"
  read -r w m < <(timed "$OUT/ours_exact" "$BIN" embed --model "$MODEL" -o "$OUT/ours_exact.safetensors" "$OUT/exact.wav")
  read -r tw tm < <(timed "$OUT/torch_exact" python3 scripts/embed_long_torch.py --model "$MODEL" --wav "$OUT/exact.wav" --threads "$THREADS" -o "$OUT/torch_exact.npy")
  d=$(compare "$OUT/ours_exact.safetensors" "$OUT/torch_exact.npy")
  echo "| hubert-probe (tiled attention) | $w s | $m MiB | $d |"
  echo "| transformers, sdpa | $tw s | $tm MiB | |"
fi
if [[ $STEPS == *chunked* ]]; then
  echo
  echo "| ${CHUNKED_MIN}-minute clip, --chunk-seconds 30 --chunk-overlap 2 | wall | peak RSS | max abs diff of pooled last layer |"
  echo "|---|---:|---:|---:|"
  read -r w m < <(timed "$OUT/ours_chunked" "$BIN" embed --model "$MODEL" --chunk-seconds 30 --chunk-overlap 2 -o "$OUT/ours_chunked.safetensors" "$OUT/chunked.wav")
  read -r tw tm < <(timed "$OUT/torch_chunked" python3 scripts/embed_long_torch.py --model "$MODEL" --wav "$OUT/chunked.wav" --chunk-seconds 30 --chunk-overlap 2 --threads "$THREADS" -o "$OUT/torch_chunked.npy")
  d=$(compare "$OUT/ours_chunked.safetensors" "$OUT/torch_chunked.npy")
  echo "| hubert-probe | $w s | $m MiB | $d |"
  echo "| transformers, sdpa, same windows | $tw s | $tm MiB | |"
fi
if [[ $STEPS == *deviation* ]]; then
  files=("$OUT"/dev20.wav "$OUT"/dev30.wav "$OUT"/dev40.wav "$OUT"/dev50.wav "$OUT"/dev60.wav)
  "$BIN" embed --model "$MODEL" --layers all -o "$OUT/dev_whole.safetensors" "${files[@]}" 2>/dev/null
  "$BIN" embed --model "$MODEL" --layers all --chunk-seconds 10 --chunk-overlap 2 -o "$OUT/dev_chunked.safetensors" "${files[@]}" 2>/dev/null
  echo
  python3 - "$OUT/dev_whole.safetensors" "$OUT/dev_chunked.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1])["pooled"], load_file(sys.argv[2])["pooled"]
print("| clip | relative L2, last layer | relative L2, worst layer (index) | cosine, last layer |")
print("|---|---:|---:|---:|")
for i, s in enumerate((20, 30, 40, 50, 60)):
    rel = np.linalg.norm(a[i] - b[i], axis=-1) / np.linalg.norm(a[i], axis=-1)
    cos = float(a[i, -1] @ b[i, -1] / np.linalg.norm(a[i, -1]) / np.linalg.norm(b[i, -1]))
    print(f"| {s} s | {rel[-1]:.2e} | {rel.max():.2e} ({rel.argmax()}) | {cos:.6f} |")
PY
fi
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); files in $OUT"
