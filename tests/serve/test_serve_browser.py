"""End to end in a real headless browser: the system Chromium, driven by Playwright, loads the
page from a live server on 127.0.0.1, uploads a DRIVE photograph through the file input and
sees the mask and the measurements; a non-image shows its one-sentence error.

Skips where the ``web`` extra, Playwright or a system Chromium is missing (``make browser``
installs Chromium; Playwright never downloads one here).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

RESULT_TIMEOUT_MS = 120_000
"""Upload to rendered result, at most (the first request also loads the model)."""

COUNT_WHITE = """img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 127) n++;
  return [img.naturalWidth, img.naturalHeight, n];
}"""


@pytest.fixture
def page(browser, live_server):
    url, _ = live_server
    p = browser.new_page(accept_downloads=True)
    p.goto(url + "/")
    p.wait_for_selector("#model option:nth-child(2)", state="attached", timeout=10_000)
    yield p
    p.close()


def test_upload_shows_mask_and_measurements(page, live_server, models, drive_image) -> None:
    from retinaseg.io import read_image

    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options[0] == "auto" and "fundus-vessels" in options and "octa-vessels" in options
    page.set_input_files("#file", str(drive_image))
    card = page.wait_for_selector(".result[data-state=done]", timeout=RESULT_TIMEOUT_MS)
    width, height, white = card.eval_on_selector("img.mask", COUNT_WHITE)
    assert (width, height) == (565, 584)  # the mask has the input's size
    seg = models.get("fundus-vessels")
    expected = int((seg(read_image(drive_image)) > seg.threshold).sum())
    assert white == expected and white > 10_000  # the mask drawn is the segmenter's, not blank
    for kind in ("input", "probability", "overlay"):
        assert card.eval_on_selector(f"img.{kind}", "i => i.naturalWidth") == 565
    density = card.query_selector("tr[data-key=vessel_area_density] td").inner_text()
    assert 0.05 < float(density) < 0.3
    assert "fundus-vessels" in card.query_selector(".status").inner_text()
    print(f"\nupload to rendered result in the browser: {float(card.get_attribute('data-ms')):.0f}"
          " ms")
    with page.expect_download() as done:
        card.query_selector("a.csv").click()
    text = Path(done.value.path()).read_text(encoding="utf-8")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["file"] == drive_image.name and float(row["vessel_area_density"]) == \
        pytest.approx(float(density), rel=1e-3)
    assert page.is_visible("#csv-all")


def test_bad_file_shows_one_sentence(page, live_server, tmp_path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    page.set_input_files("#file", str(bad))
    card = page.wait_for_selector(".result[data-state=error]", timeout=30_000)
    message = card.query_selector("[role=alert]").inner_text()
    assert message.startswith("'notes.png' is not an image") and message.endswith(".")
    _, tmp_root = live_server
    assert list(tmp_root.iterdir()) == []
