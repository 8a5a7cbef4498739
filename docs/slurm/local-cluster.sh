#!/usr/bin/env bash
# A one-node Slurm cluster on this machine from Debian's packages (munge,
# slurmctld, slurmd, slurm-client), to try preemptor's job arrays and to
# test them (tests/slurm.rs): localhost only, its own ports, config, state,
# logs and munge key and socket, all under DIR; nothing in /etc is used.
#
#   docs/slurm/local-cluster.sh up DIR     # prints: export SLURM_CONF=DIR/slurm.conf
#   docs/slurm/local-cluster.sh down DIR   # stops the daemons (DIR is kept)
#
# Run as root: slurmd starts jobs as the users who submit them. Packages:
# apt-get install slurmctld slurmd slurm-client munge.
set -euo pipefail
usage() { echo "usage: $0 up|down DIR" >&2; exit 2; }
[[ $# == 2 ]] || usage
dir=$(realpath -m "$2")

stop() { # pid file, name
    [[ -f $1 ]] || return 0
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

case $1 in
up)
    for c in munged slurmctld slurmd sbatch; do
        command -v "$c" >/dev/null || PATH=$PATH:/usr/sbin
        command -v "$c" >/dev/null || {
            echo "$0: $c not found: apt-get install slurmctld slurmd slurm-client munge" >&2
            exit 2
        }
    done
    mkdir -p "$dir"/{state,spool,log,munge}
    chmod 700 "$dir/munge"
    if [[ ! -f $dir/munge/munge.key ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
    fi
    # --force: munged checks that no one else can write the directories
    # above its files; /tmp's sticky bit is fine here.
    stop "$dir/munge/munged.pid"
    munged --force --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    cpus=$(nproc)
    mem=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$dir/slurm.conf" <<CONF
# Written by $0: one node, localhost only.
ClusterName=preemptor-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$dir/slurm.conf
    stop "$dir/slurmd.pid"
    stop "$dir/slurmctld.pid"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 100); do
        state=$(sinfo -h -N -o %T 2>/dev/null || true)
        [[ $state == idle* ]] && break
        sleep 0.2
    done
    if [[ $state != idle* ]]; then
        echo "$0: the node is not idle after 20 s (state: ${state:-none}); logs in $dir/log" >&2
        exit 1
    fi
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
down)
    stop "$dir/slurmd.pid"
    stop "$dir/slurmctld.pid"
    stop "$dir/munge/munged.pid"
    ;;
*) usage ;;
esac
