"""A printable label for a provisioned device: a QR code and the facts a technician reads."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlencode

import segno


def label_payload(site: str, name: str, hwid: str, kind: str) -> str:
    return "cityedge:device?" + urlencode({"site": site, "name": name, "hwid": hwid, "kind": kind})


def write_label(
    out_dir: Path, site: str, name: str, hwid: str, kind: str, version: str
) -> tuple[Path, Path]:
    """``label.svg`` (QR + text, 62 mm label printers print it as is) and ``qr.png``."""
    qr = segno.make(label_payload(site, name, hwid, kind), error="m")
    png = out_dir / "qr.png"
    qr.save(str(png), scale=6, border=2)
    scale = 4
    w, _h = qr.symbol_size(scale=scale, border=2)
    inner = qr.svg_inline(scale=scale, border=2, omitsize=False)
    lines = [name, f"{kind} · fw {version}", f"site {site}", f"hw {hwid}"]
    text = "".join(
        f'<text x="{w + 10}" y="{24 + i * 20}" font-family="sans-serif" font-size="{16 if i == 0 else 12}">'
        f"{html.escape(t)}</text>"
        for i, t in enumerate(lines)
    )
    width = w + 240
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{max(w, 100)}">'
        f'<rect width="100%" height="100%" fill="white"/>{inner}{text}</svg>\n'
    )
    path = out_dir / "label.svg"
    path.write_text(svg, encoding="utf-8")
    return path, png
