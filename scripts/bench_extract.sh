#!/usr/bin/env bash
# Side-by-side extraction benchmark: hubert-probe (Rust) vs transformers (PyTorch), same model,
# clips, batch sizes and 2 threads, in fp32 and bf16 (DTYPES=f32,bf16), one after the other in one
# run. Prints a Markdown table for docs/PERFORMANCE.md.
#
#   scripts/bench_extract.sh [MODEL_DIR] [SECONDS] [BATCHES] [REPS]
#
# MODEL_DIR defaults to models/hubert-base-random (made by
# `python3 scripts/make_fixtures.py --skip-tiny --full-size models/hubert-base-random`).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath -m "${1:-models/hubert-base-random}")
SECONDS_LIST=${2:-1,5}
BATCHES=${3:-1,8}
REPS=${4:-3}
THREADS=${THREADS:-2}
OUT=$(mktemp -d)
if [ ! -f "$MODEL/config.json" ]; then
  python3 scripts/make_fixtures.py --skip-tiny --full-size "$MODEL"
fi
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
cargo bench -p hubert-core --bench extract --no-run >/dev/null 2>&1
DTYPES=${DTYPES:-f32,bf16}
# ROUNDS > 1 repeats the (ours, PyTorch) pair that many times, alternating, so both sides see
# the same slow and fast spells of a shared machine; the table then lists every round's ratio
# and their median.
ROUNDS=${ROUNDS:-1}
for round in $(seq 1 "$ROUNDS"); do
  for dtype in ${DTYPES//,/ }; do
    cargo bench -p hubert-core --bench extract -- --model "$MODEL" --seconds "$SECONDS_LIST" \
      --batch "$BATCHES" --reps "$REPS" --dtype "$dtype" >"$OUT/rust.$round.$dtype.jsonl"
    python3 scripts/bench_torch.py --model "$MODEL" --seconds "$SECONDS_LIST" --batch "$BATCHES" \
      --reps "$REPS" --threads "$THREADS" --dtype "$dtype" >"$OUT/torch.$round.$dtype.jsonl"
  done
done
python3 - "$OUT"/*.jsonl <<'PY'
import json, statistics, sys
rows = {}
peak = {}
for path in sorted(sys.argv[1:], key=lambda p: int(p.rsplit("/", 1)[1].split(".")[1])):
    for line in open(path):
        r = json.loads(line)
        if "peak_rss_mib" in r:
            file_dtype = path.rsplit("/", 1)[1].split(".")[2]
            peak.setdefault((r["impl"], file_dtype), []).append(r["peak_rss_mib"])
            continue
        dtype = {"F32": "f32", "BF16": "bf16"}.get(r["dtype"], r["dtype"])
        key = (dtype, r["clip_seconds"], r["batch"])
        rows.setdefault(key, {}).setdefault(r["impl"], []).append(r["audio_s_per_s"])
print("| dtype | clip | batch | hubert-probe (audio-s/s) | PyTorch (audio-s/s) | ratio per round | median ratio |")
print("|---|---|---|---|---|---|---|")
for (dtype, secs, batch), v in sorted(rows.items(), key=lambda kv: (kv[0][0] != "f32",) + kv[0][1:]):
    ours, theirs = v.get("hubert-probe", []), v.get("pytorch", [])
    ratios = [o / t for o, t in zip(ours, theirs)]
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    med = f"{statistics.median(ratios):.2f}x" if ratios else "n/a"
    print(f"| {dtype} | {secs:g} s | {batch} | {fmt(ours)} | {fmt(theirs)} | {fmt(ratios)} | {med} |")
print()
for (impl, dtype), mibs in sorted(peak.items()):
    print(f"Peak RSS {impl} {dtype}: {min(mibs)}-{max(mibs)} MiB")
PY
