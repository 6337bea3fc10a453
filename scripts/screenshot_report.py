"""Render a triseg HTML report in headless Chromium and save a screenshot.

    python scripts/screenshot_report.py outputs/reports/result.html docs/report-screenshot.png \
        [--width 1280] [--height 2400] [--scale 0.6] [--colors 128]

The screenshot covers ``--width`` x ``--height`` CSS pixels from the top of the page; trailing blank
rows are cropped, then the image is scaled by ``--scale`` and reduced to a ``--colors`` palette
(0 keeps full colour) so that it stays small enough to commit. Chromium is found as $CHROMIUM,
chromium, chromium-browser or google-chrome.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def find_chromium() -> str:
    """The Chromium binary, or exit with one line saying how to get one."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no Chromium found (apt-get install -y chromium, or set $CHROMIUM)")


def shoot(html: Path, out: Path, width: int, height: int) -> None:
    """Screenshot ``html`` into ``out`` (PNG) with a throwaway profile."""
    profile = tempfile.mkdtemp(prefix="triseg-chromium-")
    try:
        cmd = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={width},{height}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"error: chromium failed (exit {proc.returncode}): {tail}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shrink(src: Path, dst: Path, scale: float, colors: int) -> tuple[int, int]:
    """Crop trailing white rows, scale, quantize; write ``dst`` atomically. Returns the final size."""
    img = Image.open(src).convert("RGB")
    box = ImageChops.difference(img, Image.new("RGB", img.size, "white")).getbbox()
    if box is not None:
        img = img.crop((0, 0, img.width, min(img.height, box[3] + 16)))
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    if colors:
        img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        img.save(tmp, format="PNG", optimize=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return img.size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path, help="the report HTML")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    p.add_argument("--height", type=int, default=2400, help="window height in CSS pixels (default 2400)")
    p.add_argument("--scale", type=float, default=1.0, help="resize factor for the saved PNG (default 1)")
    p.add_argument("--colors", type=int, default=0, help="palette size, 0 = full colour (default 0)")
    args = p.parse_args()
    if not args.html.is_file():
        sys.exit(f"error: {args.html} not found")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        shoot(args.html, raw, args.width, args.height)
        w, h = shrink(raw, args.out, args.scale, args.colors)
    print(f"{args.html} -> {args.out} ({w}x{h}, {args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
