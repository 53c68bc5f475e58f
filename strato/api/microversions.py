"""Microversion negotiation for compute and volume (headers in and out)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from strato.exceptions import BadRequest, NotAcceptable

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class APIVersion:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> APIVersion:
        match = _VERSION.match(text.strip())
        if not match:
            raise BadRequest(f"API Version String {text} is of invalid format. Must be of "
                             "format MajorNum.MinorNum.")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class Range:
    service: str  # the name in OpenStack-API-Version
    min: APIVersion
    max: APIVersion
    legacy_header: str | None = None  # X-OpenStack-Nova-API-Version

    def negotiate(self, headers: dict[str, str]) -> APIVersion:
        """The version the request asks for (the minimum when it asks for none)."""
        requested = None
        for value in headers.get("openstack-api-version", "").split(","):
            parts = value.strip().split()
            if len(parts) == 2 and parts[0].lower() == self.service:
                requested = parts[1]
        if requested is None and self.legacy_header:
            requested = headers.get(self.legacy_header.lower())
        if not requested:
            return self.min
        if requested.strip().lower() == "latest":
            return self.max
        version = APIVersion.parse(requested)
        if not self.min <= version <= self.max:
            raise NotAcceptable(f"Version {version} is not supported by the API. Minimum is "
                                f"{self.min} and maximum is {self.max}.")
        return version

    def response_headers(self, version: APIVersion) -> dict[str, str]:
        headers = {"OpenStack-API-Version": f"{self.service} {version}",
                   "Vary": "OpenStack-API-Version"}
        if self.legacy_header:
            headers[self.legacy_header] = str(version)
            headers["Vary"] += f", {self.legacy_header}"
        return headers


COMPUTE = Range("compute", APIVersion(2, 1), APIVersion(2, 92), "X-OpenStack-Nova-API-Version")
VOLUME = Range("volume", APIVersion(3, 0), APIVersion(3, 71))
RANGES = {"compute": COMPUTE, "volume": VOLUME}
