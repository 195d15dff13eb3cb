"""A one-camera site for the bin-fill and hygiene hil-tests: a generated video played by the
real camera source, the real gateway process, mosquitto and a subscriber for the city brain."""

from __future__ import annotations

from pathlib import Path

from hil import start_gateway

from sim.localsite import Broker, Proc, free_port


def start_camera_site(
    workdir: Path,
    procs: list[Proc],
    broker: Broker,
    video: str,
    app: str,
    *,
    fps: float,
    keyframe_s: float = 5.0,
) -> tuple[Proc, int]:
    """Start the gateway on ``video`` (camera ``cam-1``) with one app; returns it and its port."""
    http = free_port()
    config = workdir / "site.yaml"
    config.write_text(
        f"""
site: hil-site
gateway: gw-vision
http: {{port: {http}}}
shutdown_flush_s: 5
sources:
  - type: camera
    name: cam
    camera: cam-1
    url: {video}
    fps: {fps}
    motion: {{keyframe_interval_s: {keyframe_s}}}
apps:
{app}
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {broker.port}, reconnect_max_s: 1}}
""",
        encoding="utf-8",
    )
    return start_gateway(procs, workdir, config, http), http
