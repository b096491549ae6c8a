"""``retinaseg serve`` without a browser: upload checks, the missing-extra message, the command
line (a busy port, a warning for a public address) and the CSV of the measurements."""

from __future__ import annotations

import io
import socket
import sys

import numpy as np
import pytest
from PIL import Image

from retinaseg.cli import main
from retinaseg.serve import is_loopback, require_web
from retinaseg.serve.core import Limits, UploadError, check_upload, csv_text, json_value


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_check_upload_reads_the_header_only() -> None:
    limits = Limits(max_bytes=10_000, max_pixels=50 * 40)
    assert check_upload(png(np.zeros((40, 50), np.uint8)), "a.png", limits) == (50, 40)
    with pytest.raises(UploadError) as err:
        check_upload(png(np.zeros((41, 50), np.uint8)), "b.png", limits)
    assert err.value.status == 413 and "2050 pixels" in str(err.value)
    with pytest.raises(UploadError) as err:
        check_upload(b"\0" * 10_001, "c.png", limits)
    assert err.value.status == 413
    with pytest.raises(UploadError) as err:
        check_upload(b"PK\x03\x04rest", "d.bin", limits)
    assert err.value.status == 415
    with pytest.raises(UploadError) as err:
        check_upload(b"GIF89a but not really", "e.gif", limits)
    assert err.value.status == 400 and "is not an image" in str(err.value)


def test_csv_and_json_values() -> None:
    text = csv_text([{"file": "a,b.png", "x": 0.5, "y": float("nan")}, {"file": "c", "z": 1}])
    assert text.splitlines() == ["file,x,y,z", '"a,b.png",0.5,nan,', "c,,,1"]
    assert json_value(np.float32(0.25)) == 0.25 and json_value(float("inf")) is None
    assert type(json_value(np.int64(3))) is int


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")


def test_missing_extra_is_one_sentence(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    with pytest.raises(Exception) as err:
        require_web()
    assert "pip install 'retinaseg[web]'" in str(err.value)
    assert main(["serve", "--port", "0"]) == 2
    out = capsys.readouterr().err
    assert out.startswith("error: 'retinaseg serve' needs the optional package 'fastapi'")
    assert len(out.strip().splitlines()) == 1


def test_busy_port_and_bad_limits(capsys) -> None:
    pytest.importorskip("uvicorn", reason="the 'web' extra is not installed")
    pytest.importorskip("fastapi", reason="the 'web' extra is not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    out = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in out and len(out.strip().splitlines()) == 1
    assert main(["serve", "--max-mb", "0"]) == 2
    assert "--max-mb" in capsys.readouterr().err


def test_public_host_warns(monkeypatch, capsys) -> None:
    """--host 0.0.0.0 warns; the test still binds 127.0.0.1 only (the socket is swapped)."""
    uvicorn = pytest.importorskip("uvicorn", reason="the 'web' extra is not installed")
    pytest.importorskip("fastapi", reason="the 'web' extra is not installed")
    import retinaseg.serve as serve

    asked: list[tuple[str, int]] = []

    def local_bind(host: str, port: int) -> socket.socket:
        asked.append((host, port))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        return s

    ran: list[object] = []
    monkeypatch.setattr(serve, "_bind", local_bind)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(sockets))
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123"]) == 0
    captured = capsys.readouterr()
    assert "warning: serving on 0.0.0.0: anyone who can reach this machine" in captured.err
    assert asked == [("0.0.0.0", 8123)] and len(ran) == 1
    assert main(["serve"]) == 0  # the default: loopback, no warning
    assert "warning" not in capsys.readouterr().err and asked[-1] == ("127.0.0.1", 8000)
    for s in ran:
        for sock in s:
            sock.close()
