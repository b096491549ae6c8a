"""Fixtures of the web page tests: the ``web`` extra (skip when missing), a DRIVE photograph, one
model cache shared by every test, and a live server on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_S = 20.0
"""How long a live server may take to answer its first request."""


def need_web() -> None:
    """Skip unless the ``web`` extra (fastapi, uvicorn, python-multipart, httpx) imports."""
    for module in ("fastapi", "uvicorn", "python_multipart", "httpx"):
        pytest.importorskip(module, reason=f"the 'web' extra is not installed ({module} is "
                                           "missing): pip install -e '.[web]'")


@pytest.fixture(scope="session")
def drive_image(shared_data: Path) -> Path:
    """DRIVE test photograph 01_test.tif (565 × 584 px); skips without ../shared/data."""
    path = shared_data / "DRIVE" / "test" / "images" / "01_test.tif"
    if not path.is_file():
        pytest.skip(f"DRIVE test image not found at {path}")
    return path


@pytest.fixture(scope="session")
def models():
    """One model cache for all tests: each bundled model is loaded once per session."""
    need_web()
    from retinaseg.serve.core import ModelCache

    return ModelCache()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound to port 0, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(models, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(base URL, temporary-folder root) of the app served by uvicorn on 127.0.0.1 in a
    thread; stopped after the module's tests."""
    import httpx
    import uvicorn

    from retinaseg.serve.app import create_app

    tmp_root = tmp_path_factory.mktemp("serve_tmp")
    port = free_port()
    config = uvicorn.Config(create_app(tmp_root=tmp_root, models=models), host="127.0.0.1",
                            port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:  # bounded wait for the first answer
        try:
            if httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        server.should_exit = True
        pytest.fail(f"the test server did not answer within {SERVER_START_S:.0f} s")
    yield url, tmp_root
    server.should_exit = True
    thread.join(timeout=10)


def find_chromium() -> str | None:
    """A system Chromium/Chrome: ``$RETINASEG_CHROMIUM``, else the first on PATH."""
    given = os.environ.get("RETINASEG_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium driven by Playwright; skips where there is none (Playwright
    never downloads a browser here)."""
    need_web()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Playwright package is not "
                                   "installed: pip install -e '.[web]'")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found: install the system browser with 'make browser' "
                    "(apt-get install chromium) or set RETINASEG_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()
