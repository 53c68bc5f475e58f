#!/usr/bin/env bash
# The benchmarks: install what they need, then run them (bench/run.py).
#   scripts/bench.sh [NAME...]   all benchmarks, or the ones named (make bench B="image volume")
# Every bench needs the packages and venv of `make run` plus the test extras (the benches
# drive strato through tests.support, which needs httpx); the ceph bench also needs Ceph
# installed (it starts and stops a cluster of its own with scripts/ceph.sh), and so does
# the backup bench (its rbd half).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
need_ceph=0
[ "$#" = 0 ] && need_ceph=1
for name in "$@"; do case "$name" in ceph|backup) need_ceph=1 ;; esac; done
[ "$need_ceph" = 0 ] || scripts/setup-ceph.sh
exec .venv/bin/python -m bench.run "$@"
