#!/usr/bin/env bash
# The whole test suite: formatting, lints, the CUDA compile check, then every test.
# Needs the Rust toolchain (installs rustfmt/clippy components when missing) and python3 with pip
# (the CUDA compile check fetches its compiler from PyPI).
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
bash scripts/deploy-lint.sh # Dockerfiles, compose and Kubernetes manifests (hadolint, schemas, cross-checks)

# The CUDA feature compile check, so CUDA code can never silently stop compiling: a pinned CUDA 13.0
# nvcc from PyPI (scripts/cuda-toolchain.sh) builds candle's kernels, in a target dir of its own.
# About 9 minutes cold on an idle 2-core machine; CSP_CUDA_CHECK=0 skips it for a quick local run.
if [ "${CSP_CUDA_CHECK:-1}" != 0 ]; then
  (
    cuda_env=$(bash scripts/cuda-toolchain.sh --env)
    eval "$cuda_env"
    CARGO_TARGET_DIR=${CSP_CUDA_TARGET_DIR:-target/cuda-check} cargo check --workspace --features cuda --locked
  )
fi

bash scripts/setup-browser.sh # the web page's browser test: Debian's chromium, playwright-core
cargo test --workspace --locked
