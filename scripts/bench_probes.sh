#!/usr/bin/env bash
# Probe-training benchmark, Rust and PyTorch side by side in one run.
#
#   scripts/bench_probes.sh [EPOCHS] [REPEATS]     (defaults: 5 timed epochs, 3 repeats)
#
# 2000 x 768 features, 50 classes (written once to bench-out/bench_features.safetensors by
# scripts/bench_torch_probe.py --write-data), Adam 1e-3, batch 8, linear and MLP (768-256-256-50).
# Each side trains EPOCHS + 1 epochs (the first is a warm-up, not timed) and reports wall-clock
# us/step. Sides are interleaved REPEATS times and the best repeat of each is kept, so a burst
# of load from other processes on the machine does not decide the result. PyTorch runs with
# torch.set_num_threads(2) (the reference; also with 1 thread for information); the Rust
# trainer runs with 1 and with 2 threads. Load average and CPU model are printed with the table.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-5}
REPEATS=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p bench-out
DATA="$PWD/bench-out/bench_features.safetensors"
[ -f "$DATA" ] || python3 scripts/bench_torch_probe.py --write-data "$DATA"
cargo bench -p probe-heads --bench train_step --no-run >/dev/null 2>&1
OUT=bench-out/bench_probes.jsonl
: > "$OUT"
for r in $(seq "$REPEATS"); do
  echo "repeat $r/$REPEATS ..." >&2
  for t in 2 1; do
    python3 scripts/bench_torch_probe.py --data "$DATA" --epochs "$EPOCHS" --threads "$t" >> "$OUT"
  done
  for t in 1 2; do
    cargo bench -q -p probe-heads --bench train_step -- --data "$DATA" --epochs "$EPOCHS" --threads "$t" 2>/dev/null \
      | grep '^{' >> "$OUT"
  done
done
python3 - "$OUT" "$EPOCHS" "$REPEATS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in rows:
    key = (r["probe"], r["impl"], r["threads"])
    best[key] = min(best.get(key, float("inf")), r["us_per_step"])
print(f"\n2000 x 768, 50 classes, batch 8, Adam 1e-3; {sys.argv[2]} timed epochs (250 steps each) "
      f"after 1 warm-up epoch; best of {sys.argv[3]} repeats; wall-clock us/step\n")
print("| probe | PyTorch, 2 threads | PyTorch, 1 thread | hubert-probe, 1 thread | hubert-probe, 2 threads "
      "| speed-up vs PyTorch 2 threads (ours 1 / 2 threads) | speed-up, 1 thread vs 1 thread |")
print("|---|---|---|---|---|---|---|")
for probe in ("linear", "mlp"):
    t2, t1 = best[(probe, "pytorch", 2)], best[(probe, "pytorch", 1)]
    r1, r2 = best[(probe, "rust", 1)], best[(probe, "rust", 2)]
    print(f"| {probe} | {t2:.1f} | {t1:.1f} | {r1:.1f} | {r2:.1f} | {t2 / r1:.1f}x / {t2 / r2:.1f}x "
          f"| {t1 / r1:.1f}x |")
import os, subprocess
model = [l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")]
print(f"\nCPU: {model[0] if model else '?'}, {os.cpu_count()} cores; load average at the end: {os.getloadavg()}")
PY
