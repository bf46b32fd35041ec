#!/usr/bin/env bash
# Prepares a fresh machine for `make run` and `make test`: the Debian packages
# the harness and its tests need, then the virtual environment. Idempotent.
set -euo pipefail

cd "$(dirname "$0")/.."

# debootstrap builds the base image; redis-server and postgresql serve the
# store tests on the host; iptables and util-linux (nsenter) make partitions.
packages=(debootstrap debian-archive-keyring gpgv wget redis-server postgresql iptables util-linux iproute2 prometheus)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: these need root: sudo apt-get install ${missing[*]}" >&2
        exit 2
    fi
    # Keep package scripts from starting services (a system-wide PostgreSQL
    # cluster, for one): the harness starts its own servers.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $python is $("$python" --version 2>&1); the harness needs 3.11+" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
