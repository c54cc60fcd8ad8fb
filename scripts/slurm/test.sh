#!/usr/bin/env bash
# The SLURM job scripts against a real scheduler: a one-node cluster on this machine
# (local-cluster.sh), a generated corpus in ESC-50's exact layout, the tiny fixture model.
#
# Case 1: a 4-element extraction array and a dependent training job; one element is requeued
#   (scontrol requeue) while it runs. Then: every element ended COMPLETED with exit code 0, the
#   requeued one restarted and resumed from its finished chunks, exactly one element assembled
#   the store, the store is byte-identical to a single-process `extract`, and the training job
#   wrote results.json.
# Case 2: one file is undecodable (no --skip-bad): its element FAILED, the store is not
#   assembled, the dependent training job is cancelled (--kill-on-invalid-dep=yes) instead of
#   waiting forever; after the file is fixed, re-submitting only that element (--array=K, SHARDS
#   still 4) and a new training job finishes the work, again byte-identical.
#
# Needs root (the daemons) and apt for the first install. Runs in a few minutes on 2 cores.
# KEEP=1 keeps the work folder (logs, stores) for inspection.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ "$(id -u)" = 0 ] || { echo "test.sh: needs root (it starts slurmctld, slurmd, munged)" >&2; exit 1; }

work=$(mktemp -d /tmp/hubert-probe-slurm-test.XXXXXX)
export HUBERT_PROBE_SLURM_DIR=$work/cluster
cleanup() {
    "$root/scripts/slurm/local-cluster.sh" stop 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "[$(date -u +%T)] $*" >&2; }

# Prebuilt binaries, so that elements never compile: the ones `cargo test --workspace` builds
# (nothing to do after it, as in .ci/run), or BIN_DIR if set. Those carry the pipeline's
# `testing` hook HUBERT_PROBE_THROTTLE_MS (a pause after each chunk), which keeps an element
# running long enough to requeue it.
if [ -z "${BIN_DIR:-}" ]; then
    log "building the test binaries (cargo test --workspace --no-run)"
    cargo test -q --workspace --no-run
    target=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BIN_DIR=$target/debug
fi
export BIN_DIR
[ -x "$BIN_DIR/esc50" ] || fail "$BIN_DIR/esc50 not found"

scripts/slurm/local-cluster.sh start
eval "$(scripts/slurm/local-cluster.sh env)"

# --- the corpus: ESC-50-master/{audio,meta/esc50.csv}, 50 clips of 5 s at 44.1 kHz ----------
python3 - "$work/data" <<'PY'
import math, os, random, struct, sys, wave
root = os.path.join(sys.argv[1], "ESC-50-master")
os.makedirs(os.path.join(root, "audio"), exist_ok=True)
os.makedirs(os.path.join(root, "meta"), exist_ok=True)
rows = ["filename,fold,target,category,esc10,src_file,take"]
for fold in range(1, 6):
    for target, cat in enumerate(["dog", "rooster", "pig", "cow", "frog"]):
        src = 100000 + fold * 100 + target
        for t, take in enumerate("AB"):
            name = f"{fold}-{src}-{take}-{target}.wav"
            rng = random.Random(fold * 1000 + target * 10 + t)
            f0 = 200.0 * (target + 1)
            frames = bytearray()
            for i in range(5 * 44100):
                v = 0.4 * math.sin(2 * math.pi * f0 * i / 44100) + 0.05 * (rng.random() - 0.5)
                frames += struct.pack("<h", int(v * 32767))
            with wave.open(os.path.join(root, "audio", name), "wb") as w:
                w.setnchannels(1); w.setsampwidth(2); w.setframerate(44100)
                w.writeframes(bytes(frames))
            rows.append(f"{name},{fold},{target},{cat},{target < 2},{src},{take}")
with open(os.path.join(root, "meta", "esc50.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
PY

export TASK=esc50 SHARDS=4 CHUNK_SIZE=4 DATA_DIR=$work/data/ESC-50-master
export MODEL=$root/crates/hubert-core/tests/fixtures/tiny-base
export TRAIN_ARGS="--epochs 5 --no-plots"
store_name=esc50_features_tiny-base.safetensors

log "reference: one process"
"$BIN_DIR/esc50" extract --model "$MODEL" --chunk-size "$CHUNK_SIZE" --data-dir "$DATA_DIR" \
    --features-dir "$work/reference" 2>"$work/reference.log"
reference=$work/reference/$store_name
[ -f "$reference" ] || fail "no reference store"

# --- helpers ----------------------------------------------------------------------------------
# One line per job (array elements split out): "JobId=.. ArrayTaskId=.. JobState=.. ExitCode=..".
jobs_of() { scontrol -o show job "$1" 2>/dev/null || true; }
field() { grep -o "\b$1=[^ ]*" | cut -d= -f2-; }
# Waits until no job of $@ is pending or running (at most $WAIT seconds).
wait_jobs() {
    local deadline=$((SECONDS + ${WAIT:-420})) id busy
    while :; do
        busy=0
        for id in "$@"; do
            if jobs_of "$id" | field JobState | grep -Eqv '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|BOOT_FAIL|DEADLINE|PREEMPTED)$'; then
                busy=1
            fi
        done
        [ $busy = 0 ] && return
        [ $SECONDS -lt "$deadline" ] || { squeue >&2; fail "jobs $* still running after ${WAIT:-420} s"; }
        sleep 2
    done
}
show() { jobs_of "$1" | while read -r line; do
    echo "  job $(echo "$line" | field JobId) $(echo "$line" | field JobName)" \
        "$(echo "$line" | field ArrayTaskId | sed 's/^./element &/'):" \
        "$(echo "$line" | field JobState), exit $(echo "$line" | field ExitCode)," \
        "restarts $(echo "$line" | field Restarts), reason $(echo "$line" | field Reason)"
done; }

# --- case 1: requeue one element while it runs ---------------------------------------------
c1=$work/case1
mkdir -p "$c1/slurm-logs"
cd "$c1"
export FEATURES_DIR=$c1/features RESULTS_DIR=$c1/results MODELS_DIR=$c1/models
log "case 1: submitting a 4-element array and a dependent training job"
arr=$(HUBERT_PROBE_THROTTLE_MS=1500 sbatch --parsable --array=1-4 "$root/scripts/slurm/extract_array.sbatch")
arr=${arr%%;*}
train=$(sbatch --parsable --dependency="afterok:$arr" --kill-on-invalid-dep=yes "$root/scripts/slurm/train.sbatch")
train=${train%%;*}
# Element 1 does chunks 0-2; requeue it once its first chunk is written and it is still running.
parts=$FEATURES_DIR/$store_name.parts
deadline=$((SECONDS + 300))
until [ -f "$parts/chunk-00000.safetensors" ] \
    && [ "$(jobs_of "${arr}_1" | field JobState)" = RUNNING ]; do
    [ $SECONDS -lt $deadline ] || fail "element 1 never ran"
    sleep 0.2
done
log "requeueing element 1 (job ${arr}_1) while it runs"
scontrol requeue "${arr}_1"
# A requeued job is held back (BeginTime) for a while before it may start again; let it start
# as soon as it is pending, to keep the test short.
for _ in $(seq 100); do
    [ "$(jobs_of "${arr}_1" | field JobState)" = PENDING ] && break
    sleep 0.2
done
scontrol update JobId="${arr}_1" StartTime=now || true
wait_jobs "$arr" "$train"
log "case 1: job states"
show "$arr" | tee "$work/case1.states" >&2
show "$train" | tee -a "$work/case1.states" >&2

n_ok=$(jobs_of "$arr" | grep -c 'JobState=COMPLETED .*ExitCode=0:0' || true)
[ "$n_ok" = 4 ] || fail "case 1: $n_ok of 4 elements COMPLETED with exit code 0"
restarts=$(jobs_of "${arr}_1" | field Restarts)
[ "$restarts" -ge 1 ] || fail "case 1: element 1 was not requeued (restarts $restarts)"
log1=$(ls slurm-logs/hp-extract-"${arr}"_1.log)
[ "$(grep -c 'esc50 shard 1/4: job' "$log1")" -ge 2 ] || fail "case 1: element 1 ran once ($log1)"
grep -q 'CANCELLED AT .* DUE TO JOB REQUEUE' "$log1" || fail "case 1: no requeue in $log1"
# Its second run embedded only what the first had not finished (12 items in 3 chunks).
grep -Eq '^embedded (4|8) items' "$log1" || fail "case 1: element 1 did not resume from its chunks"
n_asm=$(cat slurm-logs/hp-extract-"${arr}"_*.log | grep -c '^assembled ' || true)
[ "$n_asm" = 1 ] || fail "case 1: $n_asm elements assembled the store"
cmp "$FEATURES_DIR/$store_name" "$reference" || fail "case 1: store differs from one process's"
[ ! -e "$parts" ] || fail "case 1: parts left behind"
[ "$(jobs_of "$train" | field JobState)" = COMPLETED ] || fail "case 1: training job did not complete"
[ -s "$RESULTS_DIR/esc50/tiny-base/results.json" ] || fail "case 1: no results.json"
log "case 1 passed"

# --- case 2: one element fails; the dependent job is cancelled; re-submit that element -------
c2=$work/case2
mkdir -p "$c2/slurm-logs"
cd "$c2"
cp -r "$work/data" "$c2/data"
export DATA_DIR=$c2/data/ESC-50-master FEATURES_DIR=$c2/features RESULTS_DIR=$c2/results MODELS_DIR=$c2/models
bad=$DATA_DIR/audio/3-100302-A-2.wav
printf 'RIFF\x10\x00\x00\x00WAVEjunk' > "$bad"
log "case 2: submitting with an undecodable file ($bad)"
arr=$(sbatch --parsable --array=1-4 "$root/scripts/slurm/extract_array.sbatch")
arr=${arr%%;*}
train=$(sbatch --parsable --dependency="afterok:$arr" --kill-on-invalid-dep=yes "$root/scripts/slurm/train.sbatch")
train=${train%%;*}
wait_jobs "$arr" "$train"
log "case 2: job states"
show "$arr" | tee "$work/case2.states" >&2
show "$train" | tee -a "$work/case2.states" >&2
failed=$(jobs_of "$arr" | grep 'JobState=FAILED' || true)
[ "$(printf '%s' "$failed" | grep -c . || true)" = 1 ] || fail "case 2: expected exactly one FAILED element"
k=$(echo "$failed" | field ArrayTaskId)
echo "$failed" | grep -q 'ExitCode=1:0' || fail "case 2: the failed element's exit code is not 1"
grep -q "3-100302-A-2.wav" "slurm-logs/hp-extract-${arr}_$k.log" \
    || fail "case 2: the failed element's log does not name the file"
[ "$(jobs_of "$arr" | grep -c 'JobState=COMPLETED .*ExitCode=0:0' || true)" = 3 ] \
    || fail "case 2: the other three elements did not complete"
[ "$(jobs_of "$train" | field JobState)" = CANCELLED ] || fail "case 2: training job not cancelled"
[ ! -e "$FEATURES_DIR/$store_name" ] || fail "case 2: a store was assembled despite the failure"
[ -d "$FEATURES_DIR/$store_name.parts" ] || fail "case 2: the finished chunks are gone"

log "case 2: fixing the file, re-submitting element $k only, then training"
cp "$work/data/ESC-50-master/audio/3-100302-A-2.wav" "$bad"
again=$(sbatch --parsable --array="$k" "$root/scripts/slurm/extract_array.sbatch")
again=${again%%;*}
train=$(sbatch --parsable --dependency="afterok:$again" --kill-on-invalid-dep=yes "$root/scripts/slurm/train.sbatch")
train=${train%%;*}
wait_jobs "$again" "$train"
show "$again" | tee -a "$work/case2.states" >&2
show "$train" | tee -a "$work/case2.states" >&2
jobs_of "$again" | grep -q 'JobState=COMPLETED .*ExitCode=0:0' || fail "case 2: re-submitted element failed"
grep -q '^assembled ' "slurm-logs/hp-extract-${again}_$k.log" || fail "case 2: re-submitted element did not assemble"
grep -q "shard $k/4" "slurm-logs/hp-extract-${again}_$k.log" || fail "case 2: not shard $k of 4"
cmp "$FEATURES_DIR/$store_name" "$reference" || fail "case 2: store differs from one process's"
[ "$(jobs_of "$train" | field JobState)" = COMPLETED ] || fail "case 2: training job did not complete"
[ -s "$RESULTS_DIR/esc50/tiny-base/results.json" ] || fail "case 2: no results.json"
log "case 2 passed"

if [ -n "${SLURM_TEST_RECORD:-}" ]; then
    mkdir -p "$SLURM_TEST_RECORD"
    cp -r "$work/case1.states" "$work/case2.states" "$c1/slurm-logs" "$SLURM_TEST_RECORD/"
    cp -r "$c2/slurm-logs" "$SLURM_TEST_RECORD/case2-logs"
    mv "$SLURM_TEST_RECORD/slurm-logs" "$SLURM_TEST_RECORD/case1-logs"
fi
echo "slurm test: passed" >&2
