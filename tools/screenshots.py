"""Screenshots of a rendered book, and where each page's first result lands, in headless Chromium.

    python tools/screenshots.py books/workshop/_build/html [--out books/workshop/screenshots]

For the front page, the verdict page and every chapter: a PNG of its first two screens at 1280
pixels wide (1280x1600), and a line saying how far down (in pixels, and in 800-pixel screens) the
first executed result (a table, figure or printed output) starts, whether the verdict page's last
column ends inside the window, and whether any table shows a raw NaN or a number in e-notation.
The numbers are also written to ``measure.json`` beside the PNGs so the next change can be
compared. Needs Chromium (Debian: apt-get install chromium); nothing here is part of the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH, SCREEN = 1280, 800
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--mute-audio"]

# Injected into a copy of each page: measure after layout, write the numbers into the DOM.
_MEASURE = """
<script>
window.addEventListener('load', function () {
  var out = {};
  var first = document.querySelector('article .cell_output, article .output, article img');
  out.first_result_px = first ? Math.round(first.getBoundingClientRect().top + window.scrollY) : null;
  var title = document.querySelector('article h1');
  out.title_px = title ? Math.round(title.getBoundingClientRect().top + window.scrollY) : null;
  var widest = 0;
  document.querySelectorAll('article table').forEach(function (t) {
    widest = Math.max(widest, Math.round(t.getBoundingClientRect().right));
  });
  out.widest_table_right_px = widest;
  out.window_px = window.innerWidth;
  var cells = Array.prototype.map.call(document.querySelectorAll('article td'), function (c) { return c.textContent.trim(); });
  out.nan_cells = cells.filter(function (t) { return /^(nan|NaN|None|<NA>)$/.test(t); }).length;
  out.e_notation_cells = cells.filter(function (t) { return /\\d[eE][-+]\\d/.test(t); }).length;
  var el = document.createElement('pre'); el.id = 'pika-measure'; el.textContent = JSON.stringify(out);
  document.body.appendChild(el);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium here: install it (Debian: apt-get install chromium)")


def pages(html: Path) -> list[Path]:
    chapters = sorted((html / "book" / "chapters").glob("*.html"))
    return [html / "index.html", *chapters]


def shoot(browser: str, page: Path, png: Path, profile: Path, tries: int = 3) -> None:
    for attempt in range(tries):  # a loaded machine can stall a headless start: try again
        try:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{2 * SCREEN}",
                            "--virtual-time-budget=5000", f"--screenshot={png}", page.as_uri()],
                           capture_output=True, timeout=90, check=True)
            return
        except subprocess.TimeoutExpired:
            if attempt == tries - 1:
                raise


def measure(browser: str, page: Path, profile: Path) -> dict:
    probe = page.with_name(f".measure-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    try:
        out = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{SCREEN}",
                              "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="pika-measure"[^>]*>(.*?)</pre>', out.stdout, re.S)
    return json.loads(m.group(1).replace("&quot;", '"')) if m else {"error": out.stderr[-300:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="a rendered book's HTML folder (books/<profile>/_build/html)")
    ap.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: beside _build)")
    args = ap.parse_args(argv)
    html = args.html.resolve()
    if not (html / "index.html").exists():
        sys.exit(f"{html} holds no index.html: render the book first (make book)")
    out = (args.out or html.parent.parent / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    results = {}
    with tempfile.TemporaryDirectory(prefix="pika-chromium-") as profile:
        for page in pages(html):
            name = page.stem
            shoot(browser, page, out / f"{name}.png", Path(profile))
            m = measure(browser, page, Path(profile))
            results[name] = m
            first = m.get("first_result_px")
            screens = f"{(first - (m.get('title_px') or 0)) / SCREEN:.1f}" if first is not None else "-"
            print(f"{name:28s} first result at {first} px ({screens} screens below the title); "
                  f"widest table ends at {m.get('widest_table_right_px')} of {m.get('window_px')} px; "
                  f"NaN cells {m.get('nan_cells')}, e-notation cells {m.get('e_notation_cells')}")
    (out / "measure.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"screenshots and measure.json in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
