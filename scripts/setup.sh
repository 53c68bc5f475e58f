#!/usr/bin/env bash
# Install what strato needs on this machine: Debian packages, then a venv with the package.
#   scripts/setup.sh          what `make run` needs
#   scripts/setup.sh --test   also what the tests need (PostgreSQL, the openstack CLI, ruff,
#                             httpx, Ceph)
#   scripts/setup.sh --bench  what the benchmarks share with the tests: the test extras in
#                             .venv (tests.support needs httpx); scripts/bench.sh adds Ceph
#                             for the ceph bench
# Idempotent and quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

test_deps=0 extras=0
case "${1:-}" in
    --test) test_deps=1 extras=1 ;;
    --bench) extras=1 ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--test|--bench]" >&2; exit 2 ;;
esac

# Debian packages: qemu-img for the block store; QEMU and the guest-building tools for
# compute (OVMF for UEFI guests, genisoimage for config drives, socat for the metadata
# service's per-guest link); the network data plane (iproute2, nftables, dnsmasq);
# PostgreSQL for the database tests; mmdebstrap and GRUB to
# build the test cloud image from Debian's packages; Chromium and its WebDriver for the
# dashboard's end-to-end tests.
debs=(qemu-utils qemu-system-x86 busybox-static e2fsprogs cpio kmod ovmf genisoimage socat
      iproute2 nftables dnsmasq-base)
[ "$test_deps" = 1 ] && debs+=(postgresql mmdebstrap grub-pc-bin grub-efi-amd64-bin mtools
                               dosfstools fdisk iputils-ping openssh-client
                               chromium chromium-driver fonts-dejavu-core)

missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    # Another apt/dpkg (unattended-upgrades on a fresh machine) may hold the lock: wait
    # for it, bounded, rather than fail at once; apt-get waits too, for a late comer.
    scripts/wait-apt-lock.sh
    lock=(-o "DPkg::Lock::Timeout=${STRATO_APT_LOCK_TIMEOUT:-600}")
    $sudo apt-get "${lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get "${lock[@]}" install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv, rebuilt when pyproject.toml changes.
py=${PYTHON:-python3}
extra=""
[ "$extras" = 1 ] && extra="[test]"
stamp=".venv/.installed${extra:+-test}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$py" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing strato${extra} into .venv"
    .venv/bin/pip install -q -e ".${extra}"
    touch "$stamp"
fi

# Ceph for the rbd engine's tests: Debian's packages, librados/librbd bindings into .venv.
if [ "$test_deps" = 1 ]; then scripts/setup-ceph.sh; fi
