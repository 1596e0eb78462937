#!/usr/bin/env bash
# Builds tortie and runs `tortie demo`: the NetworkPolicy tutorial in a
# sandbox of network namespaces, checked with real packets. Installs
# nftables, iproute2 and ping if they are missing. Needs root (directly or
# through sudo) to create network namespaces; the host's own namespace is
# never programmed.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
as_root ./target/release/tortie demo
