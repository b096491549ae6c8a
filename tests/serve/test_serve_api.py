"""The web page's API (``retinaseg serve``) through FastAPI's TestClient: a real DRIVE image in,
the same mask as :class:`~retinaseg.Segmenter` gives directly; bad, oversized and archive uploads
refused with one sentence of JSON; no file left in the temporary area; never a traceback."""

from __future__ import annotations

import base64
import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'web' extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="the 'web' extra is not installed: pip install -e '.[web]'")

from fastapi.testclient import TestClient  # noqa: E402

from retinaseg.serve.app import create_app  # noqa: E402
from retinaseg.serve.core import Limits  # noqa: E402


def png_of(data_url: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64,...`` URL."""
    head, payload = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width × height`` pixels and no pixel data (a decompression bomb's
    header: refused before anything is decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def client(models, tmp_root) -> TestClient:
    return TestClient(create_app(tmp_root=tmp_root, models=models))


def post(client: TestClient, name: str, data: bytes, **fields: str):
    return client.post("/api/segment", files={"file": (name, data, "application/octet-stream")},
                       data=fields)


def one_sentence_error(r, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert message.endswith(".") and message.count(". ") == 0 and "Traceback" not in message
    return message


def test_drive_image_gives_the_segmenter_mask(client, models, drive_image, tmp_root) -> None:
    from retinaseg import Segmenter
    from retinaseg.io import read_image

    r = post(client, drive_image.name, drive_image.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["modality"]) == ("fundus-vessels", "fundus")  # auto: colour
    assert (body["width"], body["height"]) == (565, 584)
    image = read_image(drive_image)
    seg = Segmenter("fundus-vessels")  # a fresh one, not the app's
    expected = seg(image) > seg.threshold
    mask = png_of(body["images"]["mask"])
    assert mask.shape == (584, 565) and set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask == 255, expected)
    assert body["threshold"] == pytest.approx(seg.threshold)
    assert png_of(body["images"]["input"]).shape == (584, 565, 3)
    assert png_of(body["images"]["overlay"]).shape == (584, 565, 3)
    prob = png_of(body["images"]["probability"])
    assert prob.shape == (584, 565) and prob.dtype == np.uint8
    # measurements: what measure_mask gives for this mask, in pixels with the quadrant grid
    from retinaseg.measure import measure_mask

    cols = measure_mask(expected, None, "fundus", "quadrants", image)
    got = body["measurements"]
    assert got["vessel_area_density"] == pytest.approx(cols["vessel_area_density"])
    assert 0.05 < got["vessel_area_density"] < 0.3  # DRIVE: about 12-15 % inside the FOV
    assert got["faz_area_px2"] is None  # NaN (no FAZ for fundus) travels as null
    row = next(csv.DictReader(io.StringIO(body["csv"])))
    assert row["file"] == "01_test.tif" and row["model"] == "fundus-vessels"
    assert float(row["vessel_area_density"]) == pytest.approx(cols["vessel_area_density"])
    assert list(tmp_root.iterdir()) == []  # the request's temporary folder is gone


def test_model_choice_and_scale(client, shared_data) -> None:
    path = shared_data / "OCTA-500" / "OCTA_6M" / "Projection Maps" / "OCTA(ILM_OPL)" / \
        "10001.bmp"
    if not path.is_file():
        pytest.skip(f"OCTA-500 map not found at {path}")
    body = post(client, path.name, path.read_bytes(), mm_per_px=str(6 / 400)).json()
    assert (body["model"], body["modality"], body["width"]) == ("octa-vessels", "octa", 400)
    assert body["measurements"]["mm_per_px"] == pytest.approx(0.015)
    assert body["measurements"]["faz_area_mm2"] is not None  # in mm² with the scale
    msg = one_sentence_error(post(client, path.name, path.read_bytes(), model="../etc/passwd"),
                             400)
    assert "unknown model" in msg and "fundus-vessels" in msg
    assert "mm_per_px" in one_sentence_error(
        post(client, path.name, path.read_bytes(), mm_per_px="wide"), 400)


def test_not_an_image_is_400(client, tmp_root) -> None:
    msg = one_sentence_error(post(client, "notes.png", b"this is not an image\n" * 20), 400)
    assert "'notes.png' is not an image" in msg
    assert "empty" in one_sentence_error(post(client, "a.png", b""), 400)
    tiny = png_bytes(np.zeros((4, 4), np.uint8))
    assert "at least 16 px" in one_sentence_error(post(client, "tiny.png", tiny), 400)
    assert "multipart" in one_sentence_error(client.post("/api/segment", content=b"x"), 400)
    assert "'file'" in one_sentence_error(client.post("/api/segment", data={"model": "auto"},
                                                      files={"other": ("a", b"b")}), 400)
    assert list(tmp_root.iterdir()) == []


def test_too_large_is_413(models, tmp_path) -> None:
    small = TestClient(create_app(Limits(max_bytes=10_000, max_pixels=100 * 100),
                                  tmp_root=tmp_path, models=models))
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    assert len(big) > 10_000
    assert "limit per file" in one_sentence_error(post(small, "big.png", big), 413)
    many = png_bytes(np.zeros((101, 100), np.uint8))  # small file, too many pixels
    assert "10000 pixels" in one_sentence_error(post(small, "many.png", many), 413)
    default = TestClient(create_app(tmp_root=tmp_path, models=models))
    bomb = forged_png(100_000, 100_000)  # 10^10 pixels in a 57-byte file
    assert "pixels" in one_sentence_error(post(default, "bomb.png", bomb), 413)
    over = b"\0" * (21 * 2**20)  # over 20 MB: refused while it streams in
    assert "20 MB" in one_sentence_error(post(default, "huge.png", over), 413)
    assert list(tmp_path.iterdir()) == []


def test_archive_is_refused(client) -> None:
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("1.bmp", b"x")
    msg = one_sentence_error(post(client, "volume.zip", buf.getvalue()), 415)
    assert "archive" in msg and "retinaseg predict" in msg


def test_decoding_happens_in_a_removed_folder(client, tmp_root, monkeypatch) -> None:
    import retinaseg.io

    seen: list[tuple[Path, bool]] = []
    real = retinaseg.io.read_image

    def spy(path):
        seen.append((Path(path), Path(path).is_file()))
        return real(path)

    monkeypatch.setattr(retinaseg.io, "read_image", spy)
    grey = png_bytes((np.indices((64, 64)).sum(0) % 7 * 30).astype(np.uint8))
    assert post(client, "../../evil name.png", grey).status_code == 200
    (path, existed), = seen
    assert existed and path.parent.parent == tmp_root and path.name == "upload.png"
    assert not path.parent.exists() and list(tmp_root.iterdir()) == []


def test_errors_are_json_never_a_traceback(models, tmp_path, monkeypatch) -> None:
    import retinaseg.serve.app as app_module

    def boom(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(app_module, "segment_and_measure", boom)
    c = TestClient(create_app(tmp_root=tmp_path, models=models), raise_server_exceptions=False)
    grey = png_bytes(np.zeros((32, 32), np.uint8))
    msg = one_sentence_error(post(c, "a.png", grey), 500)
    assert "internal error (ValueError)" in msg and "a bug" not in msg
    assert one_sentence_error(c.get("/no/such/page"), 404) == "no such page."
    assert c.get("/docs").status_code == 404  # no API docs page: it would load a CDN
    assert list(tmp_path.iterdir()) == []


def test_page_and_models(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    for text in (page.text, client.get("/static/app.js").text,
                 client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # works offline
    body = client.get("/api/models").json()
    from retinaseg.models.cards import bundled_models

    assert [m["name"] for m in body["models"]] == [n for n, _ in bundled_models()]
    assert body["default"] == {"fundus": "fundus-vessels", "octa": "octa-vessels"}
