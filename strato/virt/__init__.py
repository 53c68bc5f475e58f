"""Hypervisor drivers of strato's compute service (``strato.virt.qemu``) and the tiny
test guest they boot (``strato.virt.guestbuild``)."""
