"""Scripts baked into the test guest's initramfs (kept as strings so they ship as code)."""

INIT = r"""#!/bin/busybox sh
# strato test guest: PID 1 of an initramfs that stays the root filesystem.
# Kernel parameter strato.noagent: do not start qemu-ga (to test agent-less paths).
# Kernel parameter strato.nonet: no DHCP on eth0 (a NIC hot-plugged by hand keeps its address).
# The ext4 root disk (/dev/vda) is mounted at /mnt/root; its /bootcount counts boots.
# A login prompt (busybox getty + login) runs on the serial port /dev/ttyS0 and is
# respawned; root's password is in /etc/shadow (a test image: see guestbuild).
# Signals to PID 1 follow busybox's reboot/poweroff/halt applets:
#   TERM = reboot, USR2 = poweroff, USR1 = halt.  /sbin/shutdown (used by qemu-ga's
#   guest-shutdown) and the ACPI power button (QMP system_powerdown) send them too.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /mnt/root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

say() { echo "strato-init: $*"; }

shutting_down=0
finish() {
    [ "$shutting_down" = 1 ] && return
    shutting_down=1
    say "$1 requested"
    [ -n "$ga_pid" ] && kill "$ga_pid" 2>/dev/null
    [ -n "$btn_pid" ] && kill "$btn_pid" 2>/dev/null
    [ -n "$getty_pid" ] && kill "$getty_pid" 2>/dev/null
    sync
    umount /mnt/root 2>/dev/null || mount -o remount,ro /mnt/root 2>/dev/null
    sync
    echo "STRATO-GUEST-$1"
    case "$1" in
        reboot) reboot -f ;;
        poweroff) poweroff -f ;;
        *) halt -f ;;
    esac
    while :; do sleep 60; done
}
trap 'finish reboot' TERM
trap 'finish poweroff' USR2
trap 'finish halt' USR1
trap '' INT HUP

while read -r mod; do insmod "$mod" 2>/dev/null; done </etc/strato-modules

# The first NIC by DHCP (a strato network's dnsmasq, or QEMU user-mode's), in the
# background so a guest without a NIC or a DHCP server boots just as fast; udhcpc
# keeps running to renew, its chatter goes to /run/udhcpc.log, the script says
# STRATO-NET-UP on the console once the address is set.
net_up() {
    # strato.nonet: leave every NIC to whoever plugs it (a test addressing it by hand)
    grep -q strato.nonet /proc/cmdline && return
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /sys/class/net/eth0 ] || return
    ip link set lo up
    ip link set eth0 up
    exec udhcpc -i eth0 -f -n -t 20 -T 3 -O staticroutes -O mtu -s /etc/udhcpc.sh \
        >/run/udhcpc.log 2>&1
}
ip link set lo up 2>/dev/null
net_up &

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 /dev/vda /mnt/root; then
    n=$(cat /mnt/root/bootcount 2>/dev/null)
    n=$(( ${n:-0} + 1 ))
    echo "$n" >/mnt/root/bootcount
    sync
else
    say "cannot mount /dev/vda"
    n=0
fi

port=
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
    for f in /sys/class/virtio-ports/*/name; do
        [ -r "$f" ] || continue
        if [ "$(cat "$f")" = org.qemu.guest_agent.0 ]; then
            port=/dev/${f#/sys/class/virtio-ports/}
            port=${port%/name}
        fi
    done
    [ -z "$port" ] && sleep 0.1
    i=$((i + 1))
done
ga_pid=
if grep -q strato.noagent /proc/cmdline; then
    say "guest agent disabled (strato.noagent)"
elif [ -n "$port" ]; then
    # respawned by the main loop below if it ever dies
    qemu-ga -m virtio-serial -p "$port" -t /run &
    ga_pid=$!
else
    say "no guest agent port"
fi

# ACPI power button: any input event on the "Power Button" device means power off.
watch_button() {
    i=0
    while [ $i -lt 100 ]; do
        for d in /sys/class/input/event*; do
            [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] || continue
            ev=/dev/input/${d##*/}
            [ -c "$ev" ] || continue
            got=$(dd if="$ev" bs=24 count=1 2>/dev/null | wc -c)
            [ "$got" -gt 0 ] && kill -USR2 1
            return
        done
        sleep 0.1
        i=$((i + 1))
    done
    say "no ACPI power button"
}
watch_button &
btn_pid=$!

echo "STRATO-GUEST-READY bootcount=$n"

# getty takes ttyS0 as its controlling terminal (/dev/console never is one), so the
# console messages above keep going to the same serial port.
getty_pid=
start_getty() {
    [ -c /dev/ttyS0 ] || return
    getty -L 115200 ttyS0 vt100 &
    getty_pid=$!
}
start_getty

while :; do
    sleep 1 &
    wait $!
    if [ "$shutting_down" = 0 ] && [ -n "$ga_pid" ] && ! kill -0 "$ga_pid" 2>/dev/null; then
        qemu-ga -m virtio-serial -p "$port" -t /run &
        ga_pid=$!
    fi
    if [ "$shutting_down" = 0 ] && ! kill -0 "$getty_pid" 2>/dev/null; then
        start_getty  # after a logout (or a failed login) getty comes back
    fi
done
"""

#: The login files of the test guest: root logs in on the serial console.
PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"
SHADOW = "root:{hash}:19000:0:99999:7:::\n"
PROFILE = r"""export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
PS1='\u@strato-guest:\w# '
"""

SHUTDOWN = r"""#!/bin/sh
# /sbin/shutdown for the strato test guest: qemu-ga's guest-shutdown runs
# "shutdown -P|-H|-r +0 message"; tell PID 1 (see /init) what to do.
sig=USR2
for a in "$@"; do
    case "$a" in
        -r) sig=TERM ;;
        -H) sig=USR1 ;;
        -P|-h) sig=USR2 ;;
    esac
done
kill -"$sig" 1
"""

CHPASSWD = r"""#!/bin/sh
# chpasswd for the strato test guest (Debian's busybox-static has no chpasswd applet):
# qemu-ga's guest-set-user-password pipes "user:password" lines in (-e: already
# crypted).  Each user's /etc/shadow hash is replaced (SHA-512, random salt); the file
# is swapped in whole, so a login never reads half of it.
crypted=0
[ "$1" = "-e" ] && crypted=1
umask 077
cp /etc/shadow /etc/shadow.new || exit 1
while IFS= read -r line || [ -n "$line" ]; do
    user=${line%%:*}
    pass=${line#*:}
    [ -n "$user" ] && [ "$user" != "$line" ] || { rm -f /etc/shadow.new; exit 1; }
    if [ "$crypted" = 1 ]; then
        hash=$pass
    else
        hash=$(printf '%s' "$pass" | mkpasswd -m sha512 -P 0) || { rm -f /etc/shadow.new; exit 1; }
    fi
    day=$(( $(date +%s) / 86400 ))
    awk -F: -v OFS=: -v u="$user" -v h="$hash" -v d="$day" \
        '$1 == u { $2 = h; $3 = d; found = 1 } { print } END { exit !found }' \
        /etc/shadow.new >/etc/shadow.tmp || { rm -f /etc/shadow.new /etc/shadow.tmp; exit 1; }
    mv /etc/shadow.tmp /etc/shadow.new
done
mv /etc/shadow.new /etc/shadow
"""

UDHCPC = r"""#!/bin/sh
# udhcpc's script in the strato test guest: address, routes (option 121 when given,
# which RFC 3442 says replaces the router option), resolv.conf.
event=$1
case "$event" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/$mask" dev "$interface"
        fi
        [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
        if [ -n "$staticroutes" ]; then
            set -- $staticroutes
            while [ $# -ge 2 ]; do
                ip route replace "$1" via "$2" dev "$interface"
                shift 2
            done
        elif [ -n "$router" ]; then
            for r in $router; do
                ip route replace default via "$r" dev "$interface"
                break
            done
        fi
        {
            [ -n "$domain" ] && echo "search $domain"
            for d in $dns; do echo "nameserver $d"; done
        } >/etc/resolv.conf
        [ "$event" = bound ] && echo "STRATO-NET-UP $interface $ip/$mask" >/dev/console
        ;;
esac
exit 0
"""
