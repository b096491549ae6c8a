"""``retinaseg serve``: a local web page to segment and measure images in the browser.

Drop fundus photographs or OCTA en-face images on the page, pick a bundled model (default: by
modality, as ``retinaseg predict`` does) and see the input, the probability map, the mask, an
overlay and the measurements, with the mask (PNG) and the measurements (CSV) to download. The
page is plain HTML, JavaScript and CSS served by the app (:mod:`retinaseg.serve.app`), so it
works offline; the computing is in :mod:`retinaseg.serve.core`.

The web framework is the optional ``web`` extra (``pip install 'retinaseg[web]'``): importing
this package imports none of it; :func:`run_server` and :func:`require_web` check it.
"""

from __future__ import annotations

import importlib
import socket
import warnings
from ipaddress import ip_address

from retinaseg.errors import MissingDependencyError, RetinasegError
from retinaseg.serve.core import MAX_UPLOAD_MB, MAX_UPLOAD_PIXELS, Limits

__all__ = ["MAX_UPLOAD_MB", "MAX_UPLOAD_PIXELS", "Limits", "is_loopback", "require_web",
           "run_server"]

INSTALL_HINT = "pip install 'retinaseg[web]'"
_NEEDS = ("fastapi", "uvicorn", "python_multipart")


def require_web() -> None:
    """Raise :class:`MissingDependencyError` (one sentence) unless the ``web`` extra imports."""
    for module in _NEEDS:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingDependencyError(
                f"'retinaseg serve' needs the optional package '{module.replace('_', '-')}' "
                f"(the 'web' extra); install it with: {INSTALL_HINT}") from None


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or one sentence saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise RetinasegError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose "
                             "another --port or --host") from None
    sock.listen(64)
    return sock


def run_server(host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
               threads: int | None = None, announce: bool = True) -> None:
    """Serve the page on ``host:port`` until interrupted (Ctrl+C); ``threads``: torch's CPU
    threads per image (None: the cores, at most 8).

    Any host other than a loopback address makes the page (which has no log-in) reachable from
    other machines: that gives a warning.
    """
    require_web()
    if not 0 <= port <= 65535:
        raise RetinasegError(f"--port must be in 0-65535, not {port}")
    if not is_loopback(host):
        warnings.warn(f"serving on {host}: anyone who can reach this machine can use the page "
                      "(it has no log-in); use the default 127.0.0.1 to keep it local",
                      stacklevel=2)
    import uvicorn

    from retinaseg.serve.app import create_app
    from retinaseg.serve.core import ModelCache, warm_up

    sock = _bind(host, port)  # a busy port fails before the imports below
    warm_up()
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    if announce:
        print(f"retinaseg serve: open http://{shown}:{sock.getsockname()[1]}/ (Ctrl+C stops)",
              flush=True)
    app = create_app(limits, models=ModelCache(threads=threads))
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=16,
                            timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
