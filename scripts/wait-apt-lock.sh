#!/usr/bin/env bash
# Wait until no other apt/dpkg holds the package manager's locks, for at most
# $STRATO_APT_LOCK_TIMEOUT seconds (default 600), then exit 0; exit 1 with a message
# naming the holder when it still holds them.  A fresh Debian machine runs
# unattended-upgrades for minutes after boot: setup waits for it instead of failing.
#   scripts/wait-apt-lock.sh            used by setup.sh and setup-ceph.sh before apt-get
# The locks are found in /proc/locks (apt and dpkg take fcntl locks; flock(1) locks are
# seen too), so the wait needs no root and takes no lock itself.  apt-get is then run
# with -o DPkg::Lock::Timeout as well, for a holder that comes between the two.
# $STRATO_APT_LOCKS (space-separated paths) replaces the list of lock files (tests).
set -euo pipefail

timeout=${STRATO_APT_LOCK_TIMEOUT:-600}
locks=${STRATO_APT_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock \
/var/lib/apt/lists/lock /var/cache/apt/archives/lock}

# "major:minor:inode" as /proc/locks writes it, for each lock file that exists.
keys=()
files=()
for f in $locks; do
    [ -e "$f" ] || continue
    read -r dev inode < <(stat -L -c '%D %i' "$f")  # the file system's device, in hex
    dev=$((16#$dev))
    major=$(( ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff) ))
    minor=$(( (dev & 0xff) | ((dev >> 12) & ~0xff) ))
    keys+=("$(printf '%02x:%02x:%s' "$major" "$minor" "$inode")")
    files+=("$f")
done

# Prints "<file> <pid>" for the first lock held, nothing when none is.
holder() {
    local i
    for i in "${!keys[@]}"; do
        # /proc/locks: "1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" ("->" lines are
        # waiters: skip them).
        local pid
        pid=$(awk -v key="${keys[$i]}" '$2 != "->" && $6 == key { print $5; exit }' \
            /proc/locks)
        if [ -n "$pid" ]; then
            echo "${files[$i]} $pid"
            return
        fi
    done
}

describe() {  # "pid 1234 (unattended-upgr)"
    local pid=$1
    if [ "$pid" -gt 0 ] 2>/dev/null && [ -r "/proc/$pid/comm" ]; then
        echo "pid $pid ($(cat "/proc/$pid/comm"))"
    else
        echo "another process"
    fi
}

waited=0  # seconds slept: at least that much time has gone by ($SECONDS is whole seconds)
said=0
while held=$(holder) && [ -n "$held" ]; do
    file=${held% *}
    pid=${held#* }
    if [ "$waited" -ge "$timeout" ]; then
        echo "setup: gave up after ${timeout} s: $(describe "$pid") still holds $file" \
            "(another apt/dpkg, e.g. unattended-upgrades, is installing packages)." \
            "Let it finish, then run setup again; STRATO_APT_LOCK_TIMEOUT=<seconds>" \
            "waits longer." >&2
        exit 1
    fi
    if [ "$said" = 0 ]; then
        echo "setup: waiting up to ${timeout} s for $(describe "$pid") to release $file" \
            "(another apt/dpkg is running)" >&2
        said=1
    fi
    sleep 1
    waited=$((waited + 1))
done
[ "$said" = 0 ] || echo "setup: the package manager's lock is free after ${waited} s" >&2
exit 0
