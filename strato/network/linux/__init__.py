"""The Linux data plane (network namespaces, bridges, taps, dnsmasq, nftables)."""

from .dataplane import LinuxDataplane

__all__ = ["LinuxDataplane"]
