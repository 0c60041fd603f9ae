#!/usr/bin/env bash
# Installs flowscope as a systemd service on this host: the binary in
# /usr/local/bin, the unit in /etc/systemd/system, the configuration in
# /etc/flowscope (an existing one is kept). Builds the release binary
# first unless FLOWSCOPE_BIN names one.
#
# Usage: scripts/install.sh [--config FILE] [--no-start] [--root DIR]
#   --config FILE  install FILE as /etc/flowscope/flowscope.yaml (replacing
#                  an existing one); default: the embedded default config
#   --no-start     install only; do not enable and start the service
#   --root DIR     install under DIR instead of / (packaging, tests);
#                  implies --no-start
set -euo pipefail
cd "$(dirname "$0")/.."

args=("$@")
config="" start=1 root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --root) root="$2"; start=0; shift 2 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "${args[@]}"
fi

bin="${FLOWSCOPE_BIN:-}"
if [ -z "$bin" ]; then
  scripts/bootstrap.sh
  cargo build --release --locked --bin flowscope
  bin=target/release/flowscope
fi
[ -x "$bin" ] || { echo "install.sh: $bin is not an executable" >&2; exit 1; }

install -D -m 0755 "$bin" "$root/usr/local/bin/flowscope"
install -D -m 0644 deploy/systemd/flowscope.service "$root/etc/systemd/system/flowscope.service"
install -d -m 0755 "$root/etc/flowscope"
if [ -n "$config" ]; then
  "$bin" validate --config "$config"
  install -m 0640 "$config" "$root/etc/flowscope/flowscope.yaml"
elif [ ! -e "$root/etc/flowscope/flowscope.yaml" ]; then
  # The default writes relative files into the working directory, which
  # the unit sets to /var/lib/flowscope. As a service it also keeps its
  # kernel counters on bpffs, where the unit lets it write, so that a
  # killed agent's undelivered connection ends are counted on restart.
  "$bin" default-config \
    | sed 's|^    # pin_directory: /sys/fs/bpf/flowscope$|    pin_directory: /sys/fs/bpf/flowscope|' \
    > "$root/etc/flowscope/flowscope.yaml"
  chmod 0640 "$root/etc/flowscope/flowscope.yaml"
fi
echo "installed: $root/usr/local/bin/flowscope, $root/etc/systemd/system/flowscope.service, $root/etc/flowscope/flowscope.yaml"

if [ "$start" -eq 1 ]; then
  systemctl daemon-reload
  systemctl enable --now flowscope.service
  systemctl --no-pager status flowscope.service || true
fi
