#!/usr/bin/env bash
# The whole test suite: install what it needs, start PostgreSQL and Ceph, run pytest.
# Arguments go to pytest (e.g. scripts/test.sh -k jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

pgdir=$(mktemp -d /tmp/strato-pg.XXXXXX)
cephdir=$(mktemp -d /var/tmp/strato-ceph.XXXXXX)  # not /tmp: bluestore needs O_DIRECT
port=${STRATO_TEST_PG_PORT:-$((20000 + RANDOM % 20000))}
# A short base directory for the tests' files: guests' sockets live under it, and an
# AF_UNIX path holds 108 bytes (pytest's default /tmp/pytest-of-<user>/pytest-N plus
# xdist's popen-gwN/ leaves too little for a server's instances/<uuid>/serial.sock).
basetemp=$(mktemp -d /tmp/st.XXXXXX)
# Screenshots of every dashboard page the browser tests visited (tests/dashboard/).
artifacts=${STRATO_TEST_ARTIFACTS:-$PWD/test-artifacts}
cleanup() {
    if [ -d "$artifacts" ]; then echo "test artifacts (dashboard screenshots): $artifacts"; fi
    scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir"
    scripts/ceph.sh stop "$cephdir"; rm -rf "$cephdir"
    rm -rf "$basetemp"
}
trap cleanup EXIT
STRATO_TEST_PG_URL=$(scripts/pg.sh start "$pgdir" "$port")
export STRATO_TEST_PG_URL STRATO_REQUIRE_PG=1
# A real single-node Ceph cluster for the rbd engine's contract tests.
STRATO_TEST_CEPH_CONF=$(scripts/ceph.sh start "$cephdir")
export STRATO_TEST_CEPH_CONF STRATO_REQUIRE_CEPH=1

.venv/bin/ruff check strato tests bench
# The run is split over two processes, a module at a time (tests/conftest.py groups
# them: a module's tests and fixtures stay in one process); STRATO_TEST_WORKERS=0 runs
# it in one.  (The split once failed test_nics: a killed QEMU's zombie leader was taken
# for gone while its threads still held the taps -- fixed in virt/qemu/process.py.)
# The slowest tests in every log, so a slowdown is visible where it happens.
.venv/bin/python -m pytest -n "${STRATO_TEST_WORKERS:-2}" --basetemp="$basetemp" \
    --durations=25 "$@"
