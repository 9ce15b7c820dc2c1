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
# nvcc from PyPI (scripts/cuda-toolchain.sh) builds candle's kernels, in a target dir of its own,
# through scripts/nvcc-compile-check (full parse and PTX lowering, no optimiser, no ptxas: about 8x
# faster than a real kernel build). A few minutes cold on 2 cores; CSP_CUDA_CHECK=0 skips it.
# Under CI the check's target dir is removed afterwards: the disk is needed for the test build.
if [ "${CSP_CUDA_CHECK:-1}" != 0 ]; then
  (
    cuda_env=$(bash scripts/cuda-toolchain.sh --env)
    eval "$cuda_env"
    mkdir -p "$CUDA_ROOT/check-bin"
    ln -sf "$PWD/scripts/nvcc-compile-check" "$CUDA_ROOT/check-bin/nvcc"
    export NVCC="$CUDA_ROOT/check-bin/nvcc" PATH="$CUDA_ROOT/check-bin:$PATH"
    check_dir=${CSP_CUDA_TARGET_DIR:-target/cuda-check}
    # cudnn includes cuda: one check covers both (cuDNN's bindings need no headers to compile).
    CARGO_TARGET_DIR=$check_dir cargo check --workspace --features cuda,cudnn --locked
    if [ "${CI:-}" = true ] && [ -z "${CSP_CUDA_TARGET_DIR:-}" ]; then rm -rf "$check_dir"; fi
  )
fi

bash scripts/setup-browser.sh # the web page's browser test: Debian's chromium, playwright-core
cargo test --workspace --locked
