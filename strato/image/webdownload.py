"""web-download: image data fetched from a URI, as Glance's import method does.

The URI passes ``[import_filtering_opts]`` (Glance's rules and defaults: http/https on
ports 80 and 443, any host) when the import is asked for — a URI the filter refuses is a
400 then — and again at every redirect while the data comes, so a redirect cannot lead
the download where the filter would not.  Host names are compared as Glance does: an IP
address in its canonical form only (``127.1``, ``2130706433`` or ``0x7f000001`` are
refused, not resolved), a name only if it resolves; a name that an ``allowed_hosts`` list
does not hold is refused without a lookup.  The download runs in the import's job: a
host that cannot be reached ends the task ``failure`` with the reason, the image back in
``queued`` with ``os_glance_failed_import``.  Environment proxies are not used: the URI is
fetched from this host, as the filter judged it.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from strato.config import Config

TIMEOUT = 60.0  # seconds without progress before a download is given up
_CHUNK = 1 << 20


class DownloadFailed(Exception):
    """The data could not be fetched (the reason is the task's message)."""


def _canonical_host(host: str, allowed: list[str]) -> str | None:
    """An IP address's canonical text, or the name if it resolves; None if refused."""
    for kind in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        try:
            return str(kind(host))
        except ValueError:
            pass
    if all(c.isdigit() or c == "." for c in host):  # 2130706433, 127.1: encoded IPs
        return None
    if allowed and host not in allowed:
        return None  # refused whatever it resolves to: no lookup needed
    try:
        socket.getaddrinfo(host if host.endswith(".") else f"{host}.", 80)
    except (socket.gaierror, UnicodeError):
        return None
    return host


def uri_allowed(conf: Config, uri: Any) -> bool:
    """Glance's ``validate_import_uri``: the scheme, host and port filters (an allow list,
    when set, overrides its deny list)."""
    if not isinstance(uri, str) or not uri:
        return False
    f = conf.import_filtering_opts
    try:
        parsed = urlparse(uri)
        port = parsed.port
    except ValueError:
        return False
    scheme, host = parsed.scheme, parsed.hostname
    deny_schemes = [] if f.allowed_schemes else f.disallowed_schemes
    if not scheme or (f.allowed_schemes and scheme not in f.allowed_schemes) \
            or scheme in deny_schemes:
        return False
    allowed_hosts = [h.lower() for h in f.allowed_hosts]
    deny_hosts = [] if allowed_hosts else [h.lower() for h in f.disallowed_hosts]
    canonical = _canonical_host(host, allowed_hosts) if host else None
    if not canonical or (allowed_hosts and canonical not in allowed_hosts) \
            or canonical in deny_hosts:
        return False
    deny_ports = [] if f.allowed_ports else f.disallowed_ports
    return not (port and ((f.allowed_ports and port not in f.allowed_ports)
                          or port in deny_ports))


class _FilteredRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URI the filter lets through."""

    def __init__(self, conf: Config) -> None:
        self.conf = conf

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        if not uri_allowed(self.conf, newurl):
            raise DownloadFailed(f"downloading {req.full_url} was redirected to {newurl}, "
                                 "which does not pass the import URI filtering")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(conf: Config, uri: str) -> tuple[Iterator[bytes], int | None]:
    """The data at ``uri`` in pieces, and its length when the server says it."""
    if not uri_allowed(conf, uri):
        raise DownloadFailed(f"URI for web-download does not pass filtering: {uri}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         _FilteredRedirects(conf))
    try:
        response = opener.open(uri, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise DownloadFailed(f"downloading {uri} failed: HTTP {exc.code} "
                             f"{exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadFailed(f"downloading {uri} failed: {exc.reason} (is it reachable "
                             "from this host?)") from None
    except (OSError, ValueError) as exc:
        raise DownloadFailed(f"downloading {uri} failed: {exc}") from None
    length = response.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None

    def chunks() -> Iterator[bytes]:
        got = 0
        with response:
            while True:
                try:
                    piece = response.read(_CHUNK)
                except OSError as exc:
                    raise DownloadFailed(f"downloading {uri} failed after {got} bytes: "
                                         f"{exc}") from None
                if not piece:
                    break
                got += len(piece)
                yield piece
        if size is not None and got != size:
            raise DownloadFailed(f"downloading {uri} ended after {got} of {size} bytes")

    return chunks(), size
