"""Speed: the web page (``retinaseg serve``), from upload to result, for one DRIVE photograph.

Starts ``retinaseg serve`` in a subprocess on a free 127.0.0.1 port, then times one DRIVE test
photograph (``01_test.tif``, 565 × 584, default model by modality = ``fundus-vessels``):

- over HTTP (httpx): the first request (which also loads the model) and the median of
  ``--repeats`` more, each from sending the multipart upload to the parsed JSON answer (four
  PNGs, the measurements and their CSV);
- in a headless system Chromium (Playwright), when one is installed: the page's own figure,
  from the moment the file is chosen in the file input until the four images are decoded and
  the table is drawn, the median of ``--repeats`` uploads.

Writes the ``serve_speed`` section (``benchmarks/results/serve_speed.{md,json}``).
``--screenshot PATH`` also saves the page with one result (the docs' ``docs/images/serve.png``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/serve.py [--repeats 5] [--threads N]
        [--screenshot docs/images/serve.png]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import REPO, SHARED_DATA, md_table, publish  # noqa: E402

IMAGE = SHARED_DATA / "DRIVE" / "test" / "images" / "01_test.tif"
START_S = 60.0
"""How long the server may take to answer its first request."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, threads: int | None) -> tuple[subprocess.Popen, float]:
    """``retinaseg serve`` on 127.0.0.1:``port`` and the seconds until it answered
    ``/api/health`` (a bounded wait)."""
    import httpx

    cmd = [sys.executable, "-m", "retinaseg.cli", "serve", "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc, time.monotonic() - t0
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the server did not answer within {START_S:.0f} s")


def http_times(url: str, repeats: int) -> tuple[float, list[float], list[dict]]:
    """(first request s, the next ``repeats`` s, the answers)."""
    import httpx

    data = IMAGE.read_bytes()
    times, bodies = [], []
    with httpx.Client(timeout=300) as client:
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            r = client.post(f"{url}/api/segment", files={"file": (IMAGE.name, data)})
            r.raise_for_status()
            bodies.append(r.json())
            times.append(time.perf_counter() - t0)
    return times[0], times[1:], bodies


def chromium() -> str | None:
    return os.environ.get("RETINASEG_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser_times(url: str, repeats: int, screenshot: Path | None) -> list[float] | None:
    """Upload-to-result ms of ``repeats`` uploads through the page; None without a browser."""
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if exe is None:
        return None
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 860})
        for k in range(repeats):
            page.goto(url + "/")
            page.wait_for_selector("#model option:nth-child(2)", state="attached")
            page.set_input_files("#file", str(IMAGE))
            card = page.wait_for_selector(".result[data-state=done]", timeout=300_000)
            times.append(float(card.get_attribute("data-ms")) / 1000)
            if k == 0 and screenshot is not None:
                save_screenshot(page.screenshot(), screenshot)
        browser.close()
    return times


def save_screenshot(png: bytes, path: Path) -> None:
    """The page, shrunk to 900 px wide and 64 colours (a small file for the docs)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((900, round(im.height * 900 / im.width)), Image.LANCZOS)
    im.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed uploads after the first")
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads")
    ap.add_argument("--screenshot", type=Path, default=None, help="save the page as PNG here")
    a = ap.parse_args()
    if not IMAGE.is_file():
        raise SystemExit(f"DRIVE test image not found at {IMAGE}")
    port = free_port()
    proc, started = start_server(port, a.threads)
    url = f"http://127.0.0.1:{port}"
    try:
        first, warm, bodies = http_times(url, a.repeats)
        page = browser_times(url, a.repeats, a.screenshot)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    first_body, body = bodies[0], bodies[-1]
    server, cold = body["seconds"], first_body["seconds"]
    rows = [["server start (command to first answer; imports torch)", f"{started:.3f}", "1"],
            ["HTTP, first request (loads the model)", f"{first:.3f}", "1"],
            ["HTTP, model loaded (median)", f"{statistics.median(warm):.3f}", len(warm)]]
    if page is not None:
        rows.append(["browser page, model loaded (median)", f"{statistics.median(page):.3f}",
                     len(page)])
    threads = a.threads or "default (the cores, at most 8)"
    text = ("Upload to result for one DRIVE test photograph (`01_test.tif`, 565 × 584) through "
            "`retinaseg serve` on 127.0.0.1 (subprocess), default model by modality "
            f"(`{body['model']}`), server threads: {threads}. HTTP: from sending the multipart "
            "upload to the parsed JSON (four PNGs, the measurements, their CSV). Browser: "
            "headless system Chromium driven by Playwright, from choosing the file in the page's "
            "file input until the four images are decoded and the table is drawn"
            + (" (not measured: no Chromium or Playwright here)" if page is None else "")
            + ". The server imports torch and the rest before it answers (server start); the "
            f"first request then loads the model ({cold['load']:.2f} s: weights, BatchNorm "
            f"folding, TorchScript freezing where bfloat16) and segments ({cold['segment']:.3f}"
            " s). Inside the server, last request: segment "
            f"{server['segment']:.3f} s, measure {server['measure']:.3f} s; the rest is "
            "decoding, PNG encoding and transfer.\n\n"
            + md_table(["what", "seconds", "runs"], rows))
    raw = {"image": str(IMAGE.relative_to(SHARED_DATA)), "model": body["model"],
           "start_s": started, "http_first_s": first, "http_warm_s": warm, "browser_s": page,
           "server_seconds_first": first_body["seconds"], "server_seconds_last": server,
           "threads": a.threads}
    publish("serve_speed", "Web page (`retinaseg serve`): upload to result", text, raw)


if __name__ == "__main__":
    main()
