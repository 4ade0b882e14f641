#!/usr/bin/env bash
# Stop the daemons that start_cluster.sh started in STATE_DIR, by their pid
# files, newest first (slurmd, slurmctld, slurmdbd, mariadbd, munged). Jobs
# still queued or running are cancelled first. Safe to run when nothing runs.
# Usage: stop_cluster.sh [STATE_DIR]   (same default as start_cluster.sh).
# Leaves STATE_DIR in place (logs); start_cluster.sh wipes it.
set -uo pipefail

state="${1:-${FACETRUST_SLURM_STATE:-/tmp/facetrust-slurm}}"
if [ ! -d "$state/run" ]; then
    exit 0
fi
export SLURM_CONF="$state/etc/slurm.conf"

pid_of() {  # pid_of PIDFILE EXPECTED_COMM: print the pid if that process still runs
    local file="$1" comm="$2" pid
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    # Guard against a recycled pid: the process must be the daemon we started.
    [ "$(cat "/proc/$pid/comm")" = "$comm" ] || return 1
    echo "$pid"
}

stop_daemon() {  # stop_daemon PIDFILE COMM: SIGTERM, wait up to 15 s, then SIGKILL
    local pid
    pid="$(pid_of "$1" "$2")" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 60); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.25
    done
    echo "stop_cluster.sh: $2 ($pid) ignored SIGTERM; killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

if pid_of "$state/run/slurmctld.pid" slurmctld >/dev/null; then
    timeout 10 scancel --user=root --full >/dev/null 2>&1 || true
fi
stop_daemon "$state/run/slurmd.pid" slurmd
stop_daemon "$state/run/slurmctld.pid" slurmctld
stop_daemon "$state/run/slurmdbd.pid" slurmdbd
stop_daemon "$state/run/mariadbd.pid.launch" mariadbd
stop_daemon "$state/run/munged.pid" munged
# Job steps outlive slurmd; end the ones that belong to this cluster.
for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    if grep -qs -- "$state" "/proc/$pid/environ" "/proc/$pid/cmdline"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
done
# The link start_cluster.sh made at the default config path, if it is ours.
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$state/etc/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
fi
exit 0
