"""Files baked into the Debian cloud image (kept as strings: they are builder inputs,
hashed into the cache key, and ship as code)."""

from __future__ import annotations

#: filesystem label of the root partition (GRUB finds the root by it; fstab mounts it)
ROOT_LABEL = "strato-root"
#: filesystem label of the EFI system partition
ESP_LABEL = "STRATO-ESP"

#: Debian packages on top of the ``apt`` variant (no recommends).  ``ifupdown`` makes
#: cloud-init 22.4 render ``/etc/network/interfaces.d`` (its first renderer choice) and
#: bring the NIC up with ``isc-dhcp-client`` (a cloud-init dependency), as Debian's own
#: cloud images do; a guest without a NIC then boots without waiting for one.
PACKAGES = (
    "linux-image-cloud-amd64", "initramfs-tools", "zstd", "systemd-sysv", "udev", "dbus",
    "cloud-init", "cloud-guest-utils", "openssh-server", "sudo", "qemu-guest-agent",
    "ifupdown", "isc-dhcp-client", "netbase", "ca-certificates", "less", "procps",
    "iproute2", "iputils-ping",
)

#: dpkg filters: no documentation, manual pages or translations in the image.
DPKG_FILTERS = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)

#: Modules the initramfs carries (with their dependencies): the root disk on virtio
#: blk/scsi, ext4, and the config drive CD-ROM (IDE via ata_piix, or virtio-scsi).  The
#: cloud kernel has no AHCI, so a SATA CD-ROM (q35's default) is invisible to it.
INITRAMFS_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console", "sd_mod",
    "sr_mod", "ata_piix", "ata_generic", "isofs", "ext4", "crc32c_generic",
)

#: initramfs-tools: only the listed modules (small, quick to unpack under TCG)
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=zstd\n"

#: cloud-init: the config drive first, then the metadata service, else nothing
CLOUD_CFG = """\
# strato cloud image: where cloud-init looks for its data
datasource_list: [ConfigDrive, OpenStack, None]
# /etc/default/locale already says so: no locale generation at first boot
locale: C.UTF-8
# no RSA host key: generating one takes many seconds under TCG
ssh_genkeytypes: [ed25519, ecdsa]
datasource:
  OpenStack:
    max_wait: 30
    timeout: 5
"""

FSTAB = f"""\
LABEL={ROOT_LABEL} / ext4 rw,discard,errors=remount-ro 0 1
"""

HOSTNAME = "debian\n"

LOCALE = "LANG=C.UTF-8\n"

HOSTS = """\
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

INTERFACES = """\
# cloud-init writes the interfaces it configures to /etc/network/interfaces.d
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""

#: kernel command line: the serial port is the console (and gets a login prompt)
CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8"

#: /boot/grub/grub.cfg on the root filesystem (read by both GRUB builds)
GRUB_CFG = f"""\
set timeout=0
menuentry "Debian GNU/Linux (strato cloud image)" {{
    linux /vmlinuz {CMDLINE}
    initrd /initrd.img
}}
"""

#: embedded in both GRUB core images: serial terminal, find the root, read its grub.cfg
GRUB_EARLY_CFG = f"""\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial
search --no-floppy --label {ROOT_LABEL} --set=root
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
"""

#: GRUB modules built into the core images (nothing is loaded from disk)
GRUB_MODULES_COMMON = ("part_msdos", "ext2", "fat", "search", "search_label",
                       "search_fs_uuid", "normal", "configfile", "linux", "serial",
                       "terminal", "echo", "test", "boot", "minicmd")
GRUB_MODULES_BIOS = ("biosdisk", *GRUB_MODULES_COMMON)
GRUB_MODULES_EFI = ("efi_gop", *GRUB_MODULES_COMMON)

#: sshd drop-in: host keys come from cloud-init; without a datasource (cloud-init
#: stays disabled) make them on first start rather than fail
SSH_KEYGEN_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
"""

#: timers a short-lived test or cloud guest does not need at boot
DISABLED_UNITS = ("timers.target.wants/apt-daily.timer",
                  "timers.target.wants/apt-daily-upgrade.timer",
                  "timers.target.wants/e2scrub_all.timer",
                  "timers.target.wants/fstrim.timer",
                  "timers.target.wants/dpkg-db-backup.timer")
