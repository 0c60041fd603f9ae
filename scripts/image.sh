#!/usr/bin/env bash
# Builds flowscope's container image with buildah, from scratch: the
# release binary, exactly the shared libraries `ldd` lists for it, and the
# default configuration (deploy/container/Containerfile). Pulls nothing.
# Prints the image's name and size.
#
# Usage: scripts/image.sh [TAG]     (default localhost/flowscope:<version>)
# FLOWSCOPE_BIN=path uses that binary instead of building the release one.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

bin="${FLOWSCOPE_BIN:-}"
if [ -z "$bin" ]; then
  scripts/bootstrap.sh
  cargo build --release --locked --bin flowscope
  bin=target/release/flowscope
fi
version="$("$bin" version | awk '{print $2}')"
tag="${1:-localhost/flowscope:$version}"
for tool in buildah podman ldd objcopy; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool is missing (scripts/bootstrap.sh --test installs it)" >&2; exit 1; }
done

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
# Without debug info (the symbols stay, so backtraces keep names).
install -D -m 0755 "$bin" "$root/usr/local/bin/flowscope"
objcopy --strip-debug "$root/usr/local/bin/flowscope"
# Every library the dynamic loader resolves, and the loader itself, at the
# paths the binary asks for (`ldd` prints `name => /path (addr)` or, for the
# loader, `/path (addr)`; linux-vdso has no file).
libs="$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')"
[ -n "$libs" ] || { echo "image.sh: ldd found no libraries for $bin" >&2; exit 1; }
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -d -m 0755 "$root/etc/flowscope" "$root/tmp"
install -d -m 0700 "$root/var/lib/flowscope"
"$bin" default-config > "$root/etc/flowscope/flowscope.yaml"
cp deploy/container/Containerfile "$ctx/Containerfile"

buildah build --quiet --pull=never --layers=false -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
# buildah and podman share the image store (/var/lib/containers).
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "built $tag: the agent and $(echo "$libs" | wc -w) libraries, $size bytes ($((size / 1048576)) MiB)"
