#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the job scripts:
# munged + slurmctld + slurmd, every file (config, keys, state, logs, sockets) in one folder.
#
#   scripts/slurm/local-cluster.sh start    # installs slurm + munge with apt-get if missing
#   eval "$(scripts/slurm/local-cluster.sh env)"   # SLURM_CONF for sbatch/squeue/scontrol
#   scripts/slurm/local-cluster.sh status
#   scripts/slurm/local-cluster.sh stop
#
# Folder: $HUBERT_PROBE_SLURM_DIR (default /tmp/hubert-probe-slurm). Needs root (the daemons
# run as root here; a real cluster's run as the slurm user). The node gets every CPU of this
# machine and 90% of its memory; jobs share it by core (select/cons_tres, CR_Core_Memory).
set -euo pipefail

dir=${HUBERT_PROBE_SLURM_DIR:-/tmp/hubert-probe-slurm}
conf=$dir/slurm.conf
node=localnode

say() { echo "local-cluster: $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    mkdir -p "$dir"/{state,spool,munge,log}
    chmod 700 "$dir/munge"
    if [ ! -s "$dir/munge/munge.key" ]; then
        head -c 1024 /dev/urandom > "$dir/munge/munge.key"
        chmod 400 "$dir/munge/munge.key"
    fi
    local cpus mem_mb host
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    host=$(hostname -s)
    cat > "$conf" <<CONF
# Written by scripts/slurm/local-cluster.sh: one node, this machine.
ClusterName=hubertprobe
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmctldPort=${HUBERT_PROBE_SLURMCTLD_PORT:-6817}
SlurmdPort=${HUBERT_PROBE_SLURMD_PORT:-6818}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Requeued jobs may run again; finished jobs stay visible to scontrol for an hour.
JobRequeue=1
MinJobAge=3600
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=2
NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
}

pid_alive() { local pid; pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start() {
    install
    if pid_alive "$dir/slurmctld.pid" && pid_alive "$dir/slurmd.pid"; then
        say "already running ($conf)"
        return
    fi
    write_config
    export SLURM_CONF=$conf
    if ! pid_alive "$dir/munge/munged.pid"; then
        munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
            --seed-file="$dir/munge/munged.seed"
    fi
    pid_alive "$dir/slurmctld.pid" || slurmctld -f "$conf"
    pid_alive "$dir/slurmd.pid" || slurmd -f "$conf" -N "$node"
    # Wait until the node takes jobs.
    for _ in $(seq 60); do
        if sinfo -h -n "$node" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
            say "running: $(sinfo -h -o '%P %D %t %c CPUs %m MB')"
            say "use: export SLURM_CONF=$conf"
            return
        fi
        sleep 1
    done
    say "the node did not come up; logs in $dir/log"
    tail -n 20 "$dir"/log/*.log >&2 || true
    exit 1
}

stop() {
    local f pid
    for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        pid=$(cat "$f" 2>/dev/null || true)
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
    done
    say "stopped (state and logs kept in $dir)"
}

status() {
    local name f ok=0
    for name in munged slurmctld slurmd; do
        case $name in
            munged) f=$dir/munge/munged.pid ;;
            *) f=$dir/$name.pid ;;
        esac
        if pid_alive "$f"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; ok=1; fi
    done
    if [ $ok = 0 ]; then
        SLURM_CONF=$conf sinfo
        SLURM_CONF=$conf squeue
    fi
    return $ok
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
