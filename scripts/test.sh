#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test in the workspace.
# Needs only the Rust toolchain (installs rustfmt/clippy components when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

if [ ! -d ../shared/reference ]; then
  echo "note: ../shared/reference is missing; tests that read the reference cfgs will fail" >&2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
