"""The Debian cloud image for tests, built at most once per run and in the background.

A build takes a minute or more (several on a cold cache), so ``start()`` runs it in a
thread as soon as collection shows a test that wants the ``cloud_image`` fixture; the
fixture (``get()``) then waits for it.  The image is cached by its inputs under
``$STRATO_TEST_CACHE/cloud-image`` (default ``/var/tmp/strato-test-cache``), so later
runs on the same machine reuse it; ``strato.virt.cloudimage.build`` takes a file lock,
so a build started elsewhere (``strato cloud-image --dest``) is waited for, not
repeated.  A failed build fails the tests that need it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from strato.virt.cloudimage import CloudImage, build

#: the fixture's name: collection starts the build when a test asks for it
FIXTURE = "cloud_image"
BUILD_TIMEOUT = 1800.0


def cache_dir() -> Path:
    return Path(os.environ.get("STRATO_TEST_CACHE", "/var/tmp/strato-test-cache")) \
        / "cloud-image"


class _Build:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.image: CloudImage | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.image = build(cache_dir(), log=lambda m: None)
        except BaseException as exc:  # handed to the waiting fixture
            self.error = exc
        self.seconds = time.monotonic() - started

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="cloud-image-build",
                                               daemon=True)
                self.thread.start()

    def get(self, timeout: float = BUILD_TIMEOUT) -> CloudImage:
        self.start()
        assert self.thread is not None
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the cloud image build took over {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"building the cloud image failed: {self.error}") \
                from self.error
        assert self.image is not None
        print(f"cloud image {self.image.path} ready (waited {self.seconds:.0f} s; built in "
              f"{self.image.build_seconds:.0f} s when it was made)", file=sys.stderr)
        return self.image


_BUILD = _Build()
start = _BUILD.start
get = _BUILD.get
