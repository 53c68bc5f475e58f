#!/usr/bin/env bash
# Install what the Ceph (rbd) block store engine needs, and make Debian's librados/librbd
# Python bindings importable from the project's .venv.
#   scripts/setup-ceph.sh     idempotent; quick when everything is present
# Debian ships the bindings only for its own python3 (cp311): a .pth file in the venv
# points at a folder holding just symlinks to the two extension modules, so the venv
# does not see the rest of Debian's dist-packages.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd qemu-block-extra)
missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-ceph: installing Debian packages: ${missing[*]}" >&2
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

[ -x .venv/bin/python ] || { echo "setup-ceph: no .venv (run scripts/setup.sh first)" >&2; exit 1; }
tag=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
if [ "$tag" != 311 ]; then
    echo "setup-ceph: .venv is CPython $tag; Debian's rados/rbd bindings need 3.11" >&2
    exit 1
fi
links=.venv/ceph-bindings
mkdir -p "$links"
for mod in rados rbd; do
    so=$(ls /usr/lib/python3/dist-packages/"$mod".cpython-311-*.so 2>/dev/null | head -n 1)
    [ -n "$so" ] || { echo "setup-ceph: python3-$mod has no cp311 module" >&2; exit 1; }
    ln -sfn "$so" "$links/$(basename "$so")"
done
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
realpath "$links" >"$site/strato-ceph.pth"
.venv/bin/python -c 'import rados, rbd' \
    || { echo "setup-ceph: rados/rbd still not importable from .venv" >&2; exit 1; }
