"""A guest's serial console through strato's websocket, as a person at a terminal.

The client is websocket-client (a synchronous client, not the server's ``websockets``)::

    with SerialConsole(url) as con:
        con.login("root", "strato")
        assert con.run("cat /mnt/root/marker") == "hello"

``run`` brackets the command between two markers the shell prints, so its output is
told apart from the echo of what was typed, the prompt and the terminal's escapes.
"""

from __future__ import annotations

import re
import time
import uuid
from types import TracebackType

import websocket

#: terminal escapes the guest's shell prints (busybox ash asks for the cursor position)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class ConsoleError(AssertionError):
    """The console did not say what was expected in time."""


class SerialConsole:
    def __init__(self, url: str, timeout: float = 30.0, subprotocol: str = "binary") -> None:
        self.ws = websocket.create_connection(url, timeout=timeout,
                                              subprotocols=[subprotocol])
        self.subprotocol = self.ws.getsubprotocol()
        self.received = ""  # everything the guest sent, decoded
        self.pos = 0  # what read_until has consumed
        self.logged_in = False

    # ------------------------------------------------------------ raw I/O
    def send(self, text: str) -> None:
        self.ws.send_binary(text.encode())

    def _receive(self, deadline: float) -> bool:
        """One frame into ``received``; False when none came before ``deadline``."""
        self.ws.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return False
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConsoleError(f"the console closed: {data!r}; it said: {self.tail()!r}")
        self.received += data.decode("utf-8", "replace")
        return True

    def read_until(self, *needles: str, timeout: float = 60.0) -> str:
        """Text up to and including the first of ``needles`` not read before."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [(i, n) for n in needles if (i := self.received.find(n, self.pos)) >= 0]
            if hits:
                i, needle = min(hits)
                out = self.received[self.pos:i + len(needle)]
                self.pos = i + len(needle)
                return out
            if time.monotonic() >= deadline:
                raise ConsoleError(f"none of {needles!r} within {timeout}s; the console "
                                   f"said: {self.tail()!r}")
            self._receive(deadline)

    def tail(self, n: int = 400) -> str:
        return self.received[-n:]

    # ------------------------------------------------------------ a person's steps
    def login(self, user: str, password: str, timeout: float = 120.0) -> None:
        """Wake the getty (Enter until ``login:`` shows), log in, wait for a shell."""
        deadline = time.monotonic() + timeout
        while True:
            self.send("\r")
            try:
                self.read_until("login:", timeout=3.0)
                break
            except ConsoleError:
                if time.monotonic() >= deadline:
                    raise
        self.send(user + "\r")
        self.read_until("assword:", timeout=30.0)
        self.send(password + "\r")
        said = self.read_until("# ", "$ ", "Login incorrect",
                               timeout=max(5.0, deadline - time.monotonic()))
        if "Login incorrect" in said:
            raise ConsoleError(f"login as {user} refused: {said!r}")
        self.logged_in = True
        self.run("true", timeout=30.0)  # the shell answers

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run ``command`` in the logged-in shell; its output (lines joined by \\n)."""
        nonce = uuid.uuid4().hex[:12]
        # the quotes keep the echo of the typed line from matching the printed markers
        self.send(f'echo "::begin""-{nonce}::"; {command}; echo "::end""-{nonce}:$?::"\r')
        self.read_until(f"::begin-{nonce}::", timeout=timeout)
        out = self.read_until(f"::end-{nonce}:", timeout=timeout)
        status = int(self.read_until("::", timeout=timeout).removesuffix("::"))
        text = _ESCAPES.sub("", out.removesuffix(f"::end-{nonce}:")).replace("\r", "")
        text = text.removeprefix("\n").removesuffix("\n")
        if check and status != 0:
            raise ConsoleError(f"{command!r} exited {status}: {text!r}")
        return text

    def logout(self) -> None:
        if self.logged_in:
            self.send("exit\r")
            self.logged_in = False

    def close(self) -> None:
        try:
            self.logout()
        finally:
            self.ws.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
