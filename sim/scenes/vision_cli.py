"""``cityedge simulate bin-video`` and ``cityedge simulate factory-clip``: camera videos for the
bin-fill and hygiene demos (played by a ``camera`` source, ``loop: true``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cityedge.console import console as make_console
from cityedge.console import writable_target

console = make_console()


def bin_video(
    out: Annotated[Path, typer.Argument(help="Video file to write (.avi, MJPEG)")],
    seconds: Annotated[float, typer.Option(min=2, help="Length of the compressed day")] = 60.0,
    fps: Annotated[float, typer.Option(min=1, max=30, help="Frames per second")] = 10.0,
    overflow: Annotated[
        bool, typer.Option(help="Rubbish overflows the rim before the truck comes")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the scene")] = 2024,
) -> None:
    """A day at one bin seen from above: it fills, is emptied, fills again (night in infrared).

    The bin's region of interest is printed for the bin_fill app's ``roi``.
    """
    from sim.scenes.bins import ROI, DayPlan, write_day_video

    writable_target(out, "video file")
    plan = DayPlan(seconds=seconds, fps=fps, seed=seed, overflow_from=0.55 if overflow else None)
    n = write_day_video(out, plan)
    console.print(f"wrote {out}: {n} frames at {fps:g} fps; roi: [{', '.join(map(str, ROI))}]")


def factory_clip(
    out: Annotated[Path, typer.Argument(help="Video file to write (.avi, MJPEG)")],
    fps: Annotated[float, typer.Option(min=1, max=30, help="Frames per second")] = 5.0,
) -> None:
    """A factory floor with a clean zone: a worker walks in with cap and mask, takes the mask
    off, stays, leaves. Needs the built models (the worker is cut out of a registry photo)."""
    from edge.vision.manifest import ModelStore
    from sim.scenes.hygiene import CLEAN_ZONE, CLIP, write_factory_clip

    writable_target(out, "video file")
    n = write_factory_clip(out, ModelStore(), CLIP, fps)
    zone = ", ".join(f"[{x}, {y}]" for x, y in CLEAN_ZONE)
    console.print(f"wrote {out}: {n} frames at {fps:g} fps; clean zone polygon: [{zone}]")


def vision_demo(
    folder: Annotated[Path, typer.Argument(help="Folder for site.yaml and the two videos")],
) -> None:
    """The bin-fill and hygiene demo site: both videos and a site.yaml that plays them."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_video(folder / "bin-day.avi", seconds=120.0, fps=10.0, overflow=True, seed=2024)
    factory_clip(folder / "factory.avi", fps=5.0)
    site = folder / "site.yaml"
    site.write_text(DEMO_SITE.read_text(encoding="utf-8"), encoding="utf-8")
    console.print(f"wrote {site}; run it with: cityedge run --config {site}")


DEMO_SITE = Path(__file__).resolve().parents[1] / "demo" / "waste-food.yaml"


def register(simulate_app: typer.Typer) -> None:
    """``cityedge simulate bin-video``, ``factory-clip`` and ``vision-demo``."""
    simulate_app.command("bin-video")(bin_video)
    simulate_app.command("factory-clip")(factory_clip)
    simulate_app.command("vision-demo")(vision_demo)
