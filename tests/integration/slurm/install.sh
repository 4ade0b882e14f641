#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM cluster with accounting
# (Debian 12: Slurm 22.05, MUNGE, MariaDB for slurmdbd). Needs root.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "slurm packages already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: need root to install: ${missing[*]}" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' postinst scripts try to start services; without an init
# system that fails harmlessly ("policy-rc.d denied execution"). We start the
# daemons ourselves in start_cluster.sh.
apt-get install -y -qq "${missing[@]}"
echo "installed: ${missing[*]}"
