"""The dashboard's only way to the cloud: the public REST API, called in process.

Every page reads and acts through the same routes, middleware, policy and response
shapes as the ``openstack`` client, with the user's own token: the dashboard can do
nothing the user could not do with the CLI, and shows nothing the API would not show.
The call is an ASGI call into the app itself (no socket), streaming both ways so an
image upload or download is never held in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

# The newest version of each service: the dashboard is shipped with the API it calls.
VERSIONS = "compute latest, volume latest"


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status < 400

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def message(self) -> str:
        """The service's own fault message (any of the services' fault formats)."""
        try:
            data = self.json()
        except ValueError:
            return self.body.decode(errors="replace")[:300]
        if isinstance(data, dict):
            if isinstance(data.get("NeutronError"), dict):
                return str(data["NeutronError"].get("message", ""))
            if isinstance(data.get("error"), dict):  # Keystone
                return str(data["error"].get("message", ""))
            for value in data.values():  # Nova/Cinder: {"badRequest": {"message": ...}}
                if isinstance(value, dict) and "message" in value:
                    return str(value["message"])
            if "message" in data:  # Glance
                return str(data["message"])
        return f"HTTP {self.status}"


class ApiError(Exception):
    """A 4xx/5xx answer; the page shows ``message`` (the service's own words)."""

    def __init__(self, response: ApiResponse) -> None:
        super().__init__(response.message)
        self.status = response.status
        self.message = response.message


@dataclass
class StreamedResponse:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes] = field(repr=False)


class ApiClient:
    """Calls into ``app`` as the holder of ``token`` (None: only public calls work)."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token

    def _scope(self, method: str, path: str, query: dict[str, Any] | None,
               headers: dict[str, str]) -> dict[str, Any]:
        all_headers = {"accept": "application/json", "openstack-api-version": VERSIONS,
                       "user-agent": "strato-dashboard"}
        if self.token:
            all_headers["x-auth-token"] = self.token
        all_headers.update({k.lower(): v for k, v in headers.items()})
        qs = urlencode([(k, v) for k, v in (query or {}).items() if v is not None],
                       doseq=True)
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method.upper(), "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": qs.encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in all_headers.items()],
            "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
            "state": {},
        }

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      query: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None,
                      body: bytes | AsyncIterator[bytes] | None = None,
                      check: bool = True) -> ApiResponse:
        """One call, the whole answer in memory (every JSON call). ``check``: an error
        status raises :class:`ApiError`."""
        streamed = await self.stream(method, path, json_body=json_body, query=query,
                                     headers=headers, body=body)
        data = b"".join([chunk async for chunk in streamed.chunks])
        response = ApiResponse(streamed.status, streamed.headers, data)
        if check and not response.ok:
            raise ApiError(response)
        return response

    async def get(self, path: str, **kw: Any) -> Any:
        return (await self.request("GET", path, **kw)).json()

    async def post(self, path: str, json_body: Any = None, **kw: Any) -> ApiResponse:
        return await self.request("POST", path, json_body=json_body, **kw)

    async def delete(self, path: str, **kw: Any) -> ApiResponse:
        return await self.request("DELETE", path, **kw)

    async def stream(self, method: str, path: str, *, json_body: Any = None,
                     query: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None,
                     body: bytes | AsyncIterator[bytes] | None = None) -> StreamedResponse:
        """Start a call and return once its status is known; the body follows as
        ``chunks`` (a download is never held whole)."""
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("content-type", "application/json")
        scope = self._scope(method, path, query, headers)
        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=16)
        started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        done = asyncio.Event()

        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if body_sent:  # the app reads on after the body: the client went away
                await done.wait()
                return {"type": "http.disconnect"}
            if body is None or isinstance(body, bytes):
                body_sent = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                body_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                await queue.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:  # noqa: BLE001 - surfaced to the waiting caller
                if not started.done():
                    started.set_exception(exc)
            finally:
                done.set()
                await queue.put(None)

        task = asyncio.create_task(run())
        start = await started
        out_headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in start.get("headers", [])}

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await queue.get()
                    if message is None:
                        return
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body", False):
                        return
            finally:
                if not task.done():
                    task.cancel()

        return StreamedResponse(start["status"], out_headers, chunks())
