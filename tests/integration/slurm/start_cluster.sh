#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting, without systemd:
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, then wait for the
#   node to be idle.
# Usage: start_cluster.sh [STATE_DIR]   (default: $FACETRUST_SLURM_STATE or
#        /tmp/facetrust-slurm). Needs root and the packages of install.sh.
# Everything (configs, keys, database, spool, logs, pid files) lives in
# STATE_DIR. A cluster still running from an earlier start in the same
# STATE_DIR is stopped first. On success prints the path of
# STATE_DIR/cluster.env, which holds SLURM_CONF and the node's resources;
# clients (sbatch, sacct, snakemake) need SLURM_CONF in their environment.
# Ports: FACETRUST_SLURM_PORT_BASE (default 16817) .. +2 for slurmctld, slurmd,
# slurmdbd; +3 for MariaDB.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${1:-${FACETRUST_SLURM_STATE:-/tmp/facetrust-slurm}}"
marker="$state/.facetrust-slurm"
port_base="${FACETRUST_SLURM_PORT_BASE:-16817}"
gpus="${FACETRUST_SLURM_GPUS:-2}"

if [ "$(id -u)" -ne 0 ]; then
    echo "start_cluster.sh: must run as root (daemons run as SlurmUser=root)" >&2
    exit 2
fi
for tool in munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacctmgr; do
    command -v "$tool" >/dev/null || { echo "start_cluster.sh: '$tool' missing; run install.sh" >&2; exit 2; }
done

# Idempotence: stop whatever an earlier start left running, then start clean.
"$here/stop_cluster.sh" "$state"
if [ -e "$state" ]; then
    if [ ! -e "$marker" ]; then
        echo "start_cluster.sh: $state exists and is not a facetrust cluster dir; refusing to wipe it" >&2
        exit 2
    fi
    rm -rf "$state"
fi
# Another cluster (other STATE_DIR) on our ports would make a daemon fail late.
for port in $port_base $((port_base + 1)) $((port_base + 2)) $((port_base + 3)); do
    if ss -Hltn "sport = :$port" | grep -q .; then
        echo "start_cluster.sh: port $port is in use (another cluster? stop it, or set FACETRUST_SLURM_PORT_BASE)" >&2
        exit 2
    fi
done
mkdir -p -m 700 "$state"
touch "$marker"
mkdir -p -m 700 "$state"/{etc,log,run,spool/ctld,spool/d,munge,mysql,dev}

# The node advertises what the machine has: slurmd -C reads CPUs and memory.
node="$(hostname -s)"
hw="$(slurmd -C | head -1)"
cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
mem_mb="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
[ -n "$cpus" ] && [ -n "$mem_mb" ] || { echo "start_cluster.sh: cannot parse 'slurmd -C': $hw" >&2; exit 1; }
def_mem_per_cpu=$(( mem_mb / cpus < 1024 ? mem_mb / cpus : 1024 ))
db_pass="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

for i in $(seq 0 $((gpus - 1))); do ln -s /dev/null "$state/dev/nvidia$i"; done

fill() {  # fill TEMPLATE > OUT with this cluster's values
    sed -e "s|@STATE@|$state|g" -e "s|@NODE@|$node|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@MEM_MB@|$mem_mb|g" -e "s|@GPUS@|$gpus|g" -e "s|@LAST_GPU@|$((gpus - 1))|g" \
        -e "s|@DEF_MEM_PER_CPU@|$def_mem_per_cpu|g" \
        -e "s|@CTLD_PORT@|$port_base|g" -e "s|@SLURMD_PORT@|$((port_base + 1))|g" \
        -e "s|@DBD_PORT@|$((port_base + 2))|g" -e "s|@DB_PORT@|$((port_base + 3))|g" \
        -e "s|@DB_PASS@|$db_pass|g" "$1" > "$2"
}
fill "$here/slurm.conf.in" "$state/etc/slurm.conf"
fill "$here/gres.conf.in" "$state/etc/gres.conf"
fill "$here/slurmdbd.conf.in" "$state/etc/slurmdbd.conf"
chmod 600 "$state/etc/slurmdbd.conf"   # slurmdbd refuses a readable password file
# slurmdbd.conf and gres.conf are found next to SLURM_CONF.
export SLURM_CONF="$state/etc/slurm.conf"
# Inside a job the jobstep plugin runs `srun` with every SLURM_* variable but
# a few removed, SLURM_CONF included, so srun only finds the config at the
# default path: link it there (never over a config that is not ours).
default_conf=/etc/slurm/slurm.conf
if [ -e "$default_conf" ] || [ -L "$default_conf" ]; then
    if [ -L "$default_conf" ] && [ -e "$(dirname "$(dirname "$(readlink "$default_conf")")")/.facetrust-slurm" ] \
        || [ ! -e "$default_conf" ]; then
        rm -f "$default_conf"
    else
        echo "start_cluster.sh: $default_conf exists and is not a facetrust test cluster's; refusing to replace it" >&2
        exit 2
    fi
fi
mkdir -p /etc/slurm
ln -s "$SLURM_CONF" "$default_conf"

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD until it succeeds
    local seconds="$1" what="$2"; shift 2
    for _ in $(seq $((seconds * 4))); do
        # timeout: a client that cannot reach a daemon retries for minutes.
        if timeout 5 "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "start_cluster.sh: timed out waiting for $what; logs in $state/log" >&2
    tail -n 20 "$state"/log/* >&2 || true
    exit 1
}

# MUNGE: Slurm's clients (sacctmgr, sbatch) only talk to the default socket,
# so use a munged already serving it (any key works on one host) or start
# our own there with a fresh key; stop_cluster.sh stops only ours.
munge_socket=/run/munge/munge.socket.2
if ! (munge -n -S "$munge_socket" | unmunge -S "$munge_socket") >/dev/null 2>&1; then
    mkdir -p -m 755 /run/munge
    mungekey --create --keyfile="$state/munge/munge.key" >/dev/null
    chmod 400 "$state/munge/munge.key"
    munged --force --key-file="$state/munge/munge.key" --socket="$munge_socket" \
        --pid-file="$state/run/munged.pid" --log-file="$state/log/munged.log" \
        --seed-file="$state/munge/munged.seed"
    wait_for 10 munged sh -c "munge -n -S $munge_socket | unmunge -S $munge_socket"
fi

# MariaDB on 127.0.0.1 for slurmdbd; the init file creates its user.
mariadb-install-db --no-defaults --user=root --datadir="$state/mysql" \
    --auth-root-authentication-method=normal --skip-test-db >"$state/log/mariadb-install.log" 2>&1
cat >"$state/etc/init.sql" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
chmod 600 "$state/etc/init.sql"
nohup mariadbd --no-defaults --user=root --datadir="$state/mysql" \
    --socket="$state/run/mysqld.sock" --bind-address=127.0.0.1 --port=$((port_base + 3)) \
    --pid-file="$state/run/mariadbd.pid" --log-error="$state/log/mariadbd.log" \
    --init-file="$state/etc/init.sql" --skip-name-resolve >/dev/null 2>&1 &
echo $! >"$state/run/mariadbd.pid.launch"
wait_for 30 mariadbd mariadb-admin --no-defaults --socket="$state/run/mysqld.sock" ping

slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster facetrust >/dev/null 2>&1 || true

slurmctld
wait_for 30 slurmctld scontrol ping
slurmd
wait_for 60 "node $node to be idle" sh -c "sinfo -h -n '$node' -o %T | grep -qx idle"

cat >"$state/cluster.env" <<ENV
SLURM_CONF=$SLURM_CONF
FACETRUST_SLURM_STATE=$state
FACETRUST_SLURM_NODE=$node
FACETRUST_SLURM_CPUS=$cpus
FACETRUST_SLURM_MEM_MB=$mem_mb
FACETRUST_SLURM_GPUS=$gpus
FACETRUST_SLURM_PARTITION=main
ENV
echo "$state/cluster.env"
