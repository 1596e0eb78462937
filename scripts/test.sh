#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and table tests, golden
# rulesets (checked with the real nft parser in a throwaway network
# namespace) and the real-kernel packet tests in network namespaces.
# Installs nftables, iproute2 and ping if they are missing (needs root,
# as the namespace tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
# The kernel tests create network namespaces: run the whole suite as root.
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E env "PATH=$PATH" "$0" "$@"
fi
as_root() { "$@"; }

# cargo feeds rustc its probe program from /dev/null: where a container's
# /dev/null has become a regular file, every build fails with "couldn't
# read from stdin, as it did not contain valid UTF-8". Put it back.
dev_null() {
  if [ ! -c /dev/null ]; then
    echo "test.sh: /dev/null is a $(stat -c %F /dev/null 2>&1), not a character device: recreating it" >&2
    rm -f /dev/null && mknod -m 666 /dev/null c 1 3
  fi
}

dev_null

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
dev_null
cargo test --all-targets
