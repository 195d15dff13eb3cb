"""A printable label for a provisioned device: a QR code and the facts a technician reads.

The QR code (ISO/IEC 18004, error correction level M) keeps the standard's quiet zone of four
modules on every side and is drawn at a stated module size, 0.5 mm (readable by a phone camera
at a hand's distance; a 300 dpi label printer draws a module as 6 dots), so the label says its
own print size: the SVG's width and height are in millimetres, to be printed at 100 %.

What it encodes is something any phone camera app shows: plain text (site, device, kind,
hardware id) by default, or, when the site has one (``init-site --label-url``), an ``https://``
address made from a template with ``{site}``, ``{name}``, ``{hwid}`` and ``{kind}``, e.g. the
site's asset register. A private URI scheme (``cityedge:``) is not used: cameras offer nothing
for it.
"""

from __future__ import annotations

import html
import string
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import segno

from provisioning.errors import ProvisionInputError

QUIET_ZONE_MODULES = 4  # ISO/IEC 18004:2015, 9.1: "at least 4X wide" on all four sides
MODULE_MM = 0.5
LABEL_WIDTH_MM = 62.0  # the common continuous label roll (Brother DK-22205 and alikes)
_FIELDS = frozenset({"site", "name", "hwid", "kind"})


def check_url_template(template: str) -> None:
    """An ``https://`` template whose only fields are site, name, hwid and kind."""
    if not template.startswith("https://"):
        raise ProvisionInputError(
            f"--label-url {template!r}: must start with https://",
            hint="phone cameras open https:// addresses, e.g. https://assets.example.org/{site}/{name}",
        )
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ProvisionInputError(f"--label-url {template!r}: {err}") from None
    unknown = names - _FIELDS
    if unknown:
        raise ProvisionInputError(
            f"--label-url {template!r}: unknown field {{{sorted(unknown)[0]}}}",
            hint="fields: {site} {name} {hwid} {kind}",
        )


def label_payload(
    site: str, name: str, hwid: str, kind: str, url_template: str | None = None
) -> str:
    if url_template:
        values = {"site": site, "name": name, "hwid": hwid, "kind": kind}
        return url_template.format(**{k: quote(v, safe="") for k, v in values.items()})
    return f"cityedge {kind} {name}\nsite {site}\nhw {hwid}"


@dataclass(frozen=True)
class Label:
    svg: Path
    png: Path
    payload: str
    modules: int  # the symbol's width in modules, without the quiet zone
    module_mm: float
    qr_mm: float  # printed width of the code with its quiet zone
    width_mm: float
    height_mm: float


def write_label(
    out_dir: Path,
    site: str,
    name: str,
    hwid: str,
    kind: str,
    version: str,
    url_template: str | None = None,
) -> Label:
    """``label.svg`` (QR + text, in millimetres: print at 100 %) and ``qr.png``."""
    payload = label_payload(site, name, hwid, kind, url_template)
    qr = segno.make(payload, error="m", micro=False)
    png = out_dir / "qr.png"
    qr.save(str(png), scale=8, border=QUIET_ZONE_MODULES)
    modules = int(qr.symbol_size(scale=1, border=0)[0])
    side = modules + 2 * QUIET_ZONE_MODULES
    qr_mm = side * MODULE_MM
    height = max(qr_mm, 24.0)
    # the code in module units, scaled to millimetres by the outer SVG's viewBox
    inner = qr.svg_inline(scale=1, border=QUIET_ZONE_MODULES, omitsize=True)
    text_x = qr_mm + 2
    lines = [
        (name, 4.2),
        (f"{kind} · fw {version}", 3.0),
        (f"site {site}", 3.0),
        (f"hw {hwid}", 3.0),
        (f"print at 100 %: QR {qr_mm:g} mm, {MODULE_MM:g} mm/module", 2.0),
    ]
    text = "".join(
        f'<text x="{text_x:g}" y="{5 + i * 4.6:g}" font-family="sans-serif" font-size="{size:g}">'
        f"{html.escape(t)}</text>"
        for i, (t, size) in enumerate(lines)
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_WIDTH_MM:g}mm" height="{height:g}mm" '
        f'viewBox="0 0 {LABEL_WIDTH_MM:g} {height:g}">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<svg x="0" y="0" width="{qr_mm:g}" height="{qr_mm:g}" viewBox="0 0 {side} {side}">'
        f"{inner}</svg>{text}</svg>\n"
    )
    path = out_dir / "label.svg"
    path.write_text(svg, encoding="utf-8")
    return Label(path, png, payload, modules, MODULE_MM, qr_mm, LABEL_WIDTH_MM, height)
