#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (1 mon, 1 osd, optional mgr) under one directory,
# from Debian's packages, for the rbd block store engine's tests and benchmarks.
#   scripts/ceph.sh start DIR [PORT]   create (first time) and start; prints DIR/ceph.conf
#                                      once the pools images, vms, volumes and backups
#                                      (the backup store's) take I/O
#   scripts/ceph.sh stop DIR           stop the daemons and wait for them to exit
# Environment: STRATO_CEPH_MGR=1 also runs a mgr (ceph df, no health warning; ~0.25 GB);
# STRATO_CEPH_OSD_SIZE=20G sizes the osd's sparse block file (first start only).
# No systemd and no block devices: bluestore creates its block file itself. cephx is on.
# The mon listens on 127.0.0.1:PORT only (msgr2), so clusters can run side by side;
# restarting an existing DIR reuses its data (and its port).
set -euo pipefail
action=${1:-} dir=${2:-}
[ -n "$action" ] && [ -n "$dir" ] || { echo "usage: ceph.sh start|stop DIR [PORT]" >&2; exit 2; }
command -v ceph-mon >/dev/null || {
    echo "ceph.sh: Ceph is not installed (scripts/setup-ceph.sh)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(realpath "$dir")
conf=$dir/ceph.conf
POOLS=(images vms volumes backups)

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Mon commands through librados in one process (each `ceph` CLI run costs ~0.5 s).
admin() {
    /usr/bin/python3 - "$conf" "$@" <<'EOF'
import json, sys, time
import rados, rbd

conf, what, *args = sys.argv[1:]
r = rados.Rados(conffile=conf, conf={"client_mount_timeout": "30",
                                     "rados_mon_op_timeout": "30",
                                     "rados_osd_op_timeout": "10"})
r.connect(timeout=30)

def cmd(inbuf=b"", **kw):
    ret, out, err = r.mon_command(json.dumps(kw), inbuf, timeout=30)
    if ret not in (0, -17):
        sys.exit(f"ceph.sh: {kw['prefix']} failed ({ret}): {err}")
    return out

if what == "osd-new":
    uuid, secret = args
    out = cmd(json.dumps({"cephx_secret": secret}).encode(), prefix="osd new",
              uuid=uuid, id=0, format="json")
    print(json.loads(out)["osdid"])
elif what == "pools":
    existing = set(r.list_pools())
    for pool in args:
        if pool not in existing:
            cmd(prefix="osd pool create", pool=pool, pg_num=8, pgp_num=8,
                pool_type="replicated", autoscale_mode="off")
            cmd(prefix="osd pool set", pool=pool, var="size", val="1", yes_i_really_mean_it=True)
        cmd(prefix="osd pool application enable", pool=pool, app="rbd")
    deadline = time.monotonic() + 90
    for pool in args:  # usable = a write goes through (all PGs active)
        while True:
            try:
                with r.open_ioctx(pool) as ioctx:
                    ioctx.write_full("strato-probe", b"ok")
                    ioctx.remove_object("strato-probe")
                break
            except (rados.TimedOut, rados.Error):
                if time.monotonic() > deadline:
                    sys.exit(f"ceph.sh: pool {pool} takes no I/O after 90 s")
                time.sleep(0.2)
    for pool in args:
        with r.open_ioctx(pool) as ioctx:
            try:
                ioctx.stat("rbd_info")
            except rados.ObjectNotFound:
                rbd.RBD().pool_init(ioctx, False)
r.shutdown()
EOF
}

write_conf() {
    local port=$1 fsid=$2 osd_size=$3
    cat >"$conf" <<EOF
# single-node test cluster made by scripts/ceph.sh
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$port]
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
keyring = $dir/ceph.client.admin.keyring
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
ms_bind_msgr1 = false
run_dir = $dir/run
crash_dir = $dir/crash

[mon]
mon_data = $dir/mon
keyring = $dir/mon/keyring
public_addr = 127.0.0.1
paxos_propose_interval = 0.01
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_cluster_log_file = $dir/log/cluster.log
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log

[mgr]
mgr_data = $dir/mgr
keyring = $dir/mgr/keyring
public_addr = 127.0.0.1
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log

[osd]
osd_data = $dir/osd
keyring = $dir/osd/keyring
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $osd_size
osd_memory_target = 939524096
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
osd_max_object_name_len = 460
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
EOF
}

bootstrap() {
    local port=$1 fsid uuid osd_size key
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_size=$(numfmt --from=iec "${STRATO_CEPH_OSD_SIZE:-20G}")
    mkdir -p "$dir"/{mon,mgr,osd,run,log,crash}
    write_conf "$port" "$fsid" "$osd_size"
    local seed=$dir/seed.keyring
    {
        ceph-authtool --create-keyring "$seed" --gen-key -n mon. --cap mon 'allow *'
        ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key \
            -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' \
            --cap mds 'allow *'
        ceph-authtool --create-keyring "$dir/mgr/keyring" --gen-key -n mgr.x \
            --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *'
        ceph-authtool "$seed" --import-keyring "$dir/ceph.client.admin.keyring"
        ceph-authtool "$seed" --import-keyring "$dir/mgr/keyring"
    } >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" \
        >/dev/null
    ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" --keyring "$seed"
    rm -f "$seed" "$dir/monmap"
    start_mon
    uuid=$(cat /proc/sys/kernel/random/uuid)
    key=$(ceph-authtool --gen-print-key)
    # bluestore's mkfs writes no keyring: write it first (as vstart does)
    printf '[osd.0]\n\tkey = %s\n' "$key" >"$dir/osd/keyring"
    [ "$(admin osd-new "$uuid" "$key")" = 0 ] || { echo "ceph.sh: osd id is not 0" >&2; exit 1; }
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >"$dir/log/osd-mkfs.log" 2>&1 || {
        cat "$dir/log/osd-mkfs.log" >&2; exit 1; }
}

start_mon() {
    pid_alive "$dir/run/mon.a.pid" || ceph-mon -c "$conf" -i a
}

start_daemons() {
    start_mon
    if [ "${STRATO_CEPH_MGR:-0}" = 1 ]; then
        pid_alive "$dir/run/mgr.x.pid" || ceph-mgr -c "$conf" -i x
    fi
    pid_alive "$dir/run/osd.0.pid" || ceph-osd -c "$conf" -i 0 2>>"$dir/log/osd.0.stderr"
}

# One at a time, osd first: an osd stopping tells the mon, and waits for it if it is gone.
stop_daemon() {
    local f=$dir/run/$1.pid pid
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
        sleep 0.05
    done
    echo "ceph.sh: $1 ($pid) did not stop in 15 s: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

stop_daemons() {
    stop_daemon osd.0
    stop_daemon mgr.x
    stop_daemon mon.a
}

case "$action" in
start)
    if [ ! -f "$dir/mon/store.db/CURRENT" ]; then
        rm -rf "${dir:?}"/{mon,mgr,osd,run,log,crash} "$conf"
        bootstrap "${3:-$(free_port)}"
    else
        have=$(sed -n 's/^mon_host = \[v2:127.0.0.1:\([0-9]*\)\]$/\1/p' "$conf")
        if [ -n "${3:-}" ] && [ "$3" != "$have" ]; then
            echo "ceph.sh: $dir already uses port $have" >&2; exit 1
        fi
    fi
    start_daemons
    admin pools "${POOLS[@]}" >&2
    echo "$conf"
    ;;
stop)
    stop_daemons
    ;;
*)
    echo "usage: ceph.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
