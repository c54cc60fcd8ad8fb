#!/usr/bin/env bash
# GPU parity and throughput: hubert-probe (candle + CUDA) against transformers (PyTorch) on the
# same GPU, same random hubert-base, clips and batch sizes. See docs/GPU.md.
#
# On the build machine (no GPU needed; CUDA 13.0 from PyPI, see scripts/cuda-toolchain.sh):
#   scripts/bench_gpu.sh --build        # -> target-cuda/gpu-bin/{hubert,extract}
# On the GPU machine (carry target-cuda/gpu-bin; PyTorch with CUDA 13 installed there):
#   scripts/bench_gpu.sh [MODEL_DIR] [SECONDS] [BATCHES] [REPS] [DTYPES]
#
# MODEL_DIR defaults to models/hubert-base-random (made here when missing, with transformers).
# DTYPES defaults to f32,f16,bf16. Prints a parity table (GPU vs CPU `hubert embed --layers all`)
# and one throughput table (audio-seconds per second, median of REPS after a warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target-cuda/gpu-bin}

if [[ "${1:-}" == "--build" ]]; then
  # shellcheck source=scripts/cuda-toolchain.sh
  source scripts/cuda-toolchain.sh
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-cuda}
  cargo build --release -p hubert --features cuda
  bench=$(cargo bench -p hubert-core --bench extract --features cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "extract" and m.get("executable"):
        print(m["executable"])')
  mkdir -p "$BIN_DIR"
  cp "$CARGO_TARGET_DIR/release/hubert" "$BIN_DIR/hubert"
  cp "$bench" "$BIN_DIR/extract"
  strip "$BIN_DIR/hubert" "$BIN_DIR/extract"
  ls -la "$BIN_DIR"
  exit 0
fi

MODEL=$(realpath -m "${1:-models/hubert-base-random}")
SECONDS_LIST=${2:-1,4,5}
BATCHES=${3:-1,8}
REPS=${4:-3}
DTYPES=${5:-f32,f16,bf16}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for b in hubert extract; do
  [[ -x "$BIN_DIR/$b" ]] || { echo "no $BIN_DIR/$b: run scripts/bench_gpu.sh --build on the build machine and carry $BIN_DIR" >&2; exit 1; }
done

# The binaries were linked against a stub libcuda; at run time they need the real driver's
# libcuda.so.1 (system) and CUDA 13 cuBLAS/cuRAND/NVRTC: PyTorch's wheels carry those.
TORCH_CUDA_LIBS=$(python3 - <<'PY'
import glob, os
dirs = []
try:
    import nvidia
    for root in nvidia.__path__:
        for pat in ("cu13/lib", "*/lib"):
            dirs += [d for d in glob.glob(os.path.join(root, pat)) if glob.glob(d + "/lib*.so*")]
except ImportError:
    pass
import torch
dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
print(":".join(dict.fromkeys(dirs)))
PY
)
export LD_LIBRARY_PATH="$TORCH_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
if ldd "$BIN_DIR/hubert" | grep "not found"; then
  echo "missing libraries above: point LD_LIBRARY_PATH at CUDA 13 libcublas/libcurand/libnvrtc" >&2
  exit 1
fi

if [[ ! -f "$MODEL/config.json" ]]; then
  python3 scripts/make_fixtures.py --skip-tiny --full-size "$MODEL" ||
    python3 - "$MODEL" <<'PY'
import sys, torch
from transformers import HubertConfig, HubertModel
torch.manual_seed(0)
HubertModel(HubertConfig()).eval().save_pretrained(sys.argv[1])
PY
fi

# --- Parity: the same files on CPU (f32, the reference) and on the GPU in each dtype.
python3 - "$OUT/clips" <<'PY'
import sys, os, wave
import numpy as np
os.makedirs(sys.argv[1], exist_ok=True)
rng = np.random.default_rng(0)
for i, secs in enumerate([0.5, 1.0, 1.0, 2.5, 4.0, 5.0, 7.3]):
    n = int(secs * 16000)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.05 * rng.standard_normal(n)
    with wave.open(f"{sys.argv[1]}/clip{i}.wav", "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
PY
CLIPS=("$OUT"/clips/*.wav crates/hubert-core/tests/fixtures/audio/*.wav)
"$BIN_DIR/hubert" embed --model "$MODEL" --device cpu --layers all -o "$OUT/cpu-f32.safetensors" "${CLIPS[@]}"
runs=()
for dt in ${DTYPES//,/ }; do
  "$BIN_DIR/hubert" embed --model "$MODEL" --device cuda --dtype "$dt" --layers all \
    -o "$OUT/cuda-$dt.safetensors" "${CLIPS[@]}"
  runs+=("$OUT/cuda-$dt.safetensors")
done
echo
echo "## Parity: GPU vs CPU f32, pooled hidden states 0..=12 of ${#CLIPS[@]} clips"
python3 scripts/gpu_parity.py "$OUT/cpu-f32.safetensors" "${runs[@]}" || PARITY_FAILED=1

# --- Throughput.
: >"$OUT/bench.jsonl"
for dt in ${DTYPES//,/ }; do
  "$BIN_DIR/extract" --model "$MODEL" --device cuda --dtype "$dt" --seconds "$SECONDS_LIST" \
    --batch "$BATCHES" --reps "$REPS" | sed "s/\"impl\": \"hubert-probe\"/\"impl\": \"hubert-probe $dt\"/" >>"$OUT/bench.jsonl"
  python3 scripts/bench_torch.py --model "$MODEL" --device cuda --dtype "$dt" --seconds "$SECONDS_LIST" \
    --batch "$BATCHES" --reps "$REPS" | sed "s/\"impl\": \"pytorch\"/\"impl\": \"pytorch $dt\"/" >>"$OUT/bench.jsonl"
done
echo
echo "## Throughput (audio-s/s), hubert-base, one GPU; raw rows in $OUT/bench.jsonl"
python3 - "$OUT/bench.jsonl" "$DTYPES" <<'PY'
import json, sys
rows, extra = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "audio_s_per_s" in r:
        rows.setdefault((r["clip_seconds"], r["batch"]), {})[r["impl"]] = r["audio_s_per_s"]
    else:
        extra[r["impl"]] = r
dtypes = sys.argv[2].split(",")
cols = [(f"hubert-probe {d}", f"pytorch {d}") for d in dtypes]
print("| clip | batch | " + " | ".join(f"ours {d} | torch {d} | ratio" for d in dtypes) + " |")
print("|---|---|" + "---|---|---|" * len(dtypes))
for (secs, batch), v in sorted(rows.items()):
    cells = []
    for ours, theirs in cols:
        a, b = v.get(ours), v.get(theirs)
        cells += [str(a), str(b), f"{a / b:.2f}x" if a and b else "n/a"]
    print(f"| {secs:g} s | {batch} | " + " | ".join(cells) + " |")
print()
for k, r in sorted(extra.items()):
    print(k, {x: y for x, y in r.items() if x != "impl"})
PY
exit "${PARITY_FAILED:-0}"
