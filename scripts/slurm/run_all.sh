#!/usr/bin/env bash
# Submits the whole study to SLURM: per task an extraction job array (extract_array.sbatch) and
# a training job that starts when every element of that array succeeded (--dependency=afterok,
# --kill-on-invalid-dep=yes: cancelled rather than left pending if one failed), then one `report`
# job over every task once all training jobs have ended (afterany: it summarises what finished).
#
#   scripts/slurm/run_all.sh            # submit; prints the job ids
#   scripts/slurm/run_all.sh --dry-run  # print the sbatch commands only
#
# Settings (environment; the template variables of extract_array.sbatch pass through):
#   TASKS          tasks to run (default: all six)
#   SHARDS_<task>  array size per task (defaults below; see docs/CLUSTER.md for sizing)
#   DATA_DIR_<task>, TASK_ARGS_<task>   per-task dataset root and task flags
#   BIN_DIR (default target/release), MODEL, LAYERS, DTYPE, FEATURES_DIR (default features),
#   RESULTS_DIR (default results), MODELS_DIR, CHUNK_SIZE, EXTRA_ARGS, TRAIN_ARGS
#   LOG_DIR        per-job logs (default slurm-logs)
#   GPU=1          the GPU variant: --gres=gpu:1 and DEVICE=cuda for extraction (untested here)
#   SBATCH_ARGS    more sbatch options for every job (e.g. "--partition=cpu --account=lab")
# Run it from the folder the relative paths are relative to (jobs start in the submit folder).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dry=0
[ "${1:-}" = --dry-run ] && dry=1

TASKS=${TASKS:-"esc50 urbansound8k icbhi speechcommands librispeech nsynth"}
export BIN_DIR=${BIN_DIR:-target/release}
export FEATURES_DIR=${FEATURES_DIR:-features}
export RESULTS_DIR=${RESULTS_DIR:-results}
LOG_DIR=${LOG_DIR:-slurm-logs}

default_shards() {
    # About 1-3 hours of audio per element: 10-25 minutes for hubert-base fp32 on one core
    # (about 7 s of audio per second per core; docs/CLUSTER.md).
    case $1 in
        esc50) echo 4 ;;            # 2,000 clips x 5 s = 2.8 h
        icbhi) echo 4 ;;            # 920 recordings, 5.5 h
        urbansound8k) echo 8 ;;     # 8,732 clips, 8.75 h
        speechcommands) echo 24 ;;  # v2: 105,829 clips x 1 s = 29 h
        librispeech) echo 64 ;;     # train-clean-100 and its speaker-ID splits, ~100 h
        nsynth) echo 128 ;;         # 305,979 notes x 4 s = 340 h
        *) echo 8 ;;
    esac
}

# submit [VAR=value ...] -- sbatch options...: the variables reach the job through the
# environment (sbatch's default --export=ALL), so values may hold spaces and commas.
submit() {
    local vars=()
    while [ "$1" != -- ]; do vars+=("$1"); shift; done
    shift
    if [ $dry = 1 ]; then
        echo "${vars[*]} sbatch $*" >&2
        echo "DRYRUN$RANDOM"
    else
        env "${vars[@]}" sbatch --parsable "$@"
    fi
}

[ $dry = 1 ] || mkdir -p "$LOG_DIR"
# shellcheck disable=SC2206 # word splitting of SBATCH_ARGS is intended
common=(${SBATCH_ARGS:-})
gpu=()
if [ "${GPU:-0}" = 1 ]; then
    gpu=(--gres=gpu:1)
    export DEVICE=cuda
fi

train_ids=()
for task in $TASKS; do
    n_var=SHARDS_$task d_var=DATA_DIR_$task a_var=TASK_ARGS_$task
    n=${!n_var:-$(default_shards "$task")}
    data=${!d_var:-}
    targs=${!a_var:-}
    vars=(TASK="$task" SHARDS="$n" DATA_DIR="$data" TASK_ARGS="$targs")
    extract=$(submit "${vars[@]}" -- "${common[@]}" "${gpu[@]}" --array="1-$n" \
        --job-name="hp-extract-$task" --output="$LOG_DIR/%x-%A_%a.log" \
        "$here/extract_array.sbatch")
    extract=${extract%%;*}
    train=$(submit "${vars[@]}" -- "${common[@]}" --dependency="afterok:$extract" \
        --kill-on-invalid-dep=yes --job-name="hp-train-$task" --output="$LOG_DIR/%x-%j.log" \
        "$here/train.sbatch")
    train=${train%%;*}
    train_ids+=("$train")
    echo "$task: extraction array $extract ($n elements), training $train"
done

deps=$(IFS=:; echo "${train_ids[*]}")
report=$(submit -- "${common[@]}" --dependency="afterany:$deps" --job-name=hp-report \
    --output="$LOG_DIR/%x-%j.log" \
    --wrap="set -e; '$BIN_DIR/report' --results-dir '$RESULTS_DIR'")
echo "report: $report (after every training job; writes $RESULTS_DIR/summary.{md,csv,json})"
