#!/usr/bin/env bash
# Installs what building and testing flowscope needs, only what is missing.
# Idempotent: a second run on a ready machine does nothing but check.
#
# Needs root for apt-get (the agent needs root anyway to load eBPF).
# Usage: scripts/bootstrap.sh [--test]   (--test also installs the real
# peers the integration tests start: dnsmasq, nginx, dig, nft, iproute2.)
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]}; run as root or install them"
    exit 1
  fi
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The eBPF object is linked by bpf-linker against LLVM 22 (the nightly's LLVM).
apt_install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev pkg-config iproute2
# bpftool: scripts/bench-load.sh reads the programs' run_time_ns/run_cnt and
# the maps' memory with it; also the tool to inspect the programs
# (`bpftool prog dump xlated`).
apt_install bpftool

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly (eBPF builds core from source)"
  rustup component add rust-src --toolchain nightly
fi
if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  log "building bpf-linker against LLVM 22 (takes a few minutes, once)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22
fi

if [ $want_test -eq 1 ]; then
  # Real peers the tests start: nft (drops, NAT), dnsmasq (DNS), dig,
  # Prometheus (scrapes the prometheus exporter, receives remote write),
  # VictoriaMetrics (a second remote-write receiver,
  # exporters/tests/remote_write.rs).
  apt_install nftables dnsmasq-base bind9-dnsutils prometheus victoria-metrics
  # The deploy tests: build and run the container image (buildah; podman
  # with runc, as crun refuses this machine's hybrid cgroups; objcopy from
  # binutils drops the binary's debug info), check the systemd unit
  # (systemd-analyze), validate the Kubernetes manifests (kubernetes-validate
  # from PyPI, in a venv of its own).
  apt_install buildah podman runc binutils systemd python3-venv openssl
  venv="${FLOWSCOPE_TOOLS:-$HOME/.cache/flowscope/tools}"
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'kubernetes-validate==1.31.*'
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    log "kubectl is missing: no registry here serves it; install kubectl 1.32 (with kustomize) by hand for the Kubernetes manifest tests"
  fi
  # Headless Chromium and its WebDriver server: integration/tests/ui.rs
  # drives the ui exporter's pages in a real browser.
  apt_install chromium chromium-driver
fi

# tracefs carries the tracepoint format files the receiver reads offsets from.
if [ ! -e /sys/kernel/tracing/events ] && [ "$(id -u)" -eq 0 ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
log "ready"
