#!/usr/bin/env bash
# The gateway image's install steps, kept here so CI can run them (no Docker engine runs there).
#   scripts/install-gateway.sh PREFIX [SOURCE]
# Creates a virtual environment at PREFIX and installs cityedge from SOURCE (default: this
# checkout) with the extras a gateway runs with (CITYEDGE_EXTRAS, default "gateway": Modbus,
# CoAP and vision; the models themselves are built by `make models` and mounted, see README).
# A gateway runs the gateway only: it installs from a copy of SOURCE that holds just the rooms
# a gateway needs (GATEWAY_ROOMS), so the simulators, scene renderers, local-site launcher, live
# view and demo (sim/) and the city brain's side (cloud_bridge/citybrain/) are not installed;
# `cityedge simulate`, `demo`, `ingest`... then say that they are not part of this install.
# As root, it also creates the unprivileged 'cityedge' user and /etc/cityedge, as the
# Dockerfile expects.
set -euo pipefail
prefix=${1:?usage: install-gateway.sh PREFIX [SOURCE]}
source_dir=${2:-$(cd "$(dirname "$0")/.." && pwd)}
python=${PYTHON:-python3}
GATEWAY_ROOMS=(cityedge protocols edge cloud_bridge provisioning)
LEFT_OUT=(cloud_bridge/citybrain)

# A fresh folder, not SOURCE itself: setuptools builds in the source folder, and a build/ left
# there by an earlier full build would carry the left-out rooms into the wheel.
stage=$(mktemp -d "${TMPDIR:-/tmp}/cityedge-gateway-src.XXXXXX")
trap 'rm -rf "$stage"' EXIT
tar -C "$source_dir" -cf - --exclude=__pycache__ --exclude='*.pyc' \
  "${LEFT_OUT[@]/#/--exclude=}" pyproject.toml README.md "${GATEWAY_ROOMS[@]}" |
  tar -C "$stage" -xf -

"$python" -m venv "$prefix"
"$prefix/bin/pip" install --disable-pip-version-check -q "$stage[${CITYEDGE_EXTRAS:-gateway}]"
"$prefix/bin/cityedge" --help >/dev/null

if [[ $(id -u) -eq 0 && "${CITYEDGE_CREATE_USER:-1}" == 1 ]]; then
  id cityedge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/cityedge --create-home --shell /usr/sbin/nologin cityedge
  install -d -o cityedge -g cityedge -m 0750 /etc/cityedge /var/lib/cityedge
fi
echo "cityedge installed in $prefix"
