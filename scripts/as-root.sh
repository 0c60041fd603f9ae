# Sourced by the entry scripts: re-runs the calling script as root (eBPF,
# network namespaces and apt need it), through sudo when available.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E "$0" "$@"
  fi
  echo "$(basename "$0"): needs root (eBPF, network namespaces, apt); run it as root" >&2
  exit 1
fi
# cargo and rustup live in the invoking user's home when run through sudo.
if ! command -v cargo >/dev/null 2>&1; then
  for d in "${SUDO_USER:+/home/$SUDO_USER/.cargo/bin}" /root/.cargo/bin; do
    [ -n "$d" ] && [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
