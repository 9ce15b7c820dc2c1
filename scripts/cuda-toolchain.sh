#!/usr/bin/env bash
# A CUDA 13.0 compiler and headers from PyPI's NVIDIA wheels, so `--features cuda` compiles on a
# machine without a GPU or a system CUDA. One release only: candle 0.11's cudarc rejects 13.5, and
# wheels of mixed releases break ptxas.
#
#   source scripts/cuda-toolchain.sh               install when missing, export into this shell
#   eval "$(bash scripts/cuda-toolchain.sh --env)" the same from any shell (prints export lines)
#   bash scripts/cuda-toolchain.sh                 install when missing, show the variables
#   ... --link                                     also make link stubs (see below)
#
# Installs into $CSP_CUDA_DIR (default: .cuda/ in the repo, git-ignored); a second run finds the
# pinned set there and installs nothing. Exports CUDA_ROOT, CUDA_PATH, CUDA_HOME (the wheels'
# nvidia/cu13 folder), PATH with its bin, CUDA_COMPUTE_CAP (default 90, the H100/H200) and
# CUDAFORGE_THREADS (default: every core) for candle's kernel build.
#
# --link: a binary built with `cuda` links against libcuda (only a GPU machine's driver has it),
# cuBLAS, cuBLASLt, cuRAND and NVRTC. This writes stub libraries with the right sonames into
# $CUDA_ROOT/lib/stubs, where cudarc's build script looks, from the symbols that the compiled
# crates reference; at run time the GPU machine's real libraries are loaded instead. Run it once
# the crates are built (`cargo build --lib`) and before the binary links: gpu-check.sh --build.

_csp_cuda_main() {
  local repo here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || return 1
  repo=$(dirname "$here")
  local dir=${CSP_CUDA_DIR:-$repo/.cuda}
  local root=$dir/nvidia/cu13
  # One CUDA release (13.0): every wheel that nvcc and candle's kernels need.
  local pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-runtime==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
  )
  local mode=install link=0 arg
  for arg in "$@"; do
    case $arg in
      --env) mode="env" ;;
      --link) link=1 ;;
      -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$here/cuda-toolchain.sh"
        return 0
        ;;
      *)
        echo "cuda-toolchain: unknown argument $arg (--env, --link, --help)" >&2
        return 2
        ;;
    esac
  done

  local want have=""
  want=$(printf '%s\n' "${pins[@]}")
  [ -f "$dir/PINS" ] && have=$(cat "$dir/PINS")
  if [ "$have" != "$want" ] || [ ! -x "$root/bin/nvcc" ]; then
    _csp_cuda_install "$dir" "$want" "${pins[@]}" || return 1
  fi
  # A toolkit's layout: the dev symlink that `-lcudart` (candle's kernels) needs, and lib/stubs,
  # which cudarc's build script adds to the link search only if it exists when it runs.
  mkdir -p "$root/lib/stubs" && ln -sfn libcudart.so.13 "$root/lib/libcudart.so" || return 1
  "$root/bin/nvcc" --version >/dev/null 2>&1 || {
    echo "cuda-toolchain: $root/bin/nvcc does not run" >&2
    return 1
  }
  if [ "$link" = 1 ]; then
    _csp_cuda_link_stubs "$repo" "$root" || return 1
  fi

  local cap=${CUDA_COMPUTE_CAP:-90}
  # candle's kernel build (cudaforge) runs nvcc on half the cores unless told otherwise; its GGUF/MoE
  # library is a dozen minute-long nvcc runs, so use them all.
  local jobs=${CUDAFORGE_THREADS:-$(nproc 2>/dev/null || echo 2)}
  local path=$root/bin:$PATH
  case ":$PATH:" in *":$root/bin:"*) path=$PATH ;; esac
  if [ "$mode" = env ]; then
    printf 'export CUDA_ROOT=%q CUDA_PATH=%q CUDA_HOME=%q CUDA_COMPUTE_CAP=%q CUDAFORGE_THREADS=%q PATH=%q\n' \
      "$root" "$root" "$root" "$cap" "$jobs" "$path"
  else
    export CUDA_ROOT=$root CUDA_PATH=$root CUDA_HOME=$root CUDA_COMPUTE_CAP=$cap CUDAFORGE_THREADS=$jobs PATH=$path
    echo "cuda-toolchain: CUDA_ROOT=CUDA_PATH=CUDA_HOME=$root CUDA_COMPUTE_CAP=$cap, $root/bin on PATH" >&2
  fi
}

# Fresh install into a temporary folder, moved into place only when complete.
_csp_cuda_install() {
  local dir=$1 want=$2
  shift 2
  command -v python3 >/dev/null 2>&1 || {
    echo "cuda-toolchain: python3 with pip is needed to fetch the NVIDIA wheels" >&2
    return 1
  }
  echo "cuda-toolchain: installing $* into $dir" >&2
  rm -rf "$dir.tmp" || return 1
  # Progress goes to stderr so that --env output stays a clean list of exports.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --target "$dir.tmp" "$@" >&2 || {
    echo "cuda-toolchain: pip install failed" >&2
    return 1
  }
  printf '%s\n' "$want" >"$dir.tmp/PINS" || return 1
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# Stub shared libraries for linking without a GPU machine. Each symbol the compiled crates leave
# undefined goes to the library that owns its prefix; the stubs carry the real libraries' sonames
# (CUDA 13: libcublas.so.13, libcurand.so.10, libnvrtc.so.13; the driver: libcuda.so.1).
_csp_cuda_link_stubs() {
  local repo=$1 root=$2
  local target=${CARGO_TARGET_DIR:-$repo/target}
  local stubs=$root/lib/stubs work
  work=$(mktemp -d) || return 1
  # The crates that call (or inline calls to) the CUDA libraries.
  find "$target" -path '*/deps/*' \( -name 'libcudarc-*.rlib' -o -name 'libcandle_*.rlib' \
    -o -name 'libcsp_*.rlib' \) -print0 2>/dev/null |
    xargs -0 -r nm -u --format=just-symbols 2>/dev/null | sort -u >"$work/undefined"
  if ! grep -q '^cuInit$' "$work/undefined"; then
    echo "cuda-toolchain: --link found no compiled cudarc under $target; build with --features cuda first" >&2
    rm -rf "$work"
    return 1
  fi
  mkdir -p "$stubs" || return 1
  local spec lib soname pattern
  for spec in 'cublasLt:libcublasLt.so.13:^cublasLt' 'cublas:libcublas.so.13:^cublas[^L]' \
    'curand:libcurand.so.10:^curand' 'nvrtc:libnvrtc.so.13:^nvrtc' \
    'cuda:libcuda.so.1:^cu[A-Z]'; do
    IFS=: read -r lib soname pattern <<<"$spec"
    grep -E "$pattern" "$work/undefined" | sed 's/.*/void &(void) {}/' >"$work/$lib.c"
    cc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$work/$lib.c" || {
      rm -rf "$work"
      return 1
    }
    echo "cuda-toolchain: $stubs/lib$lib.so ($soname, $(wc -l <"$work/$lib.c") symbols)" >&2
  done
  rm -rf "$work"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  _csp_cuda_main "$@"
else
  _csp_cuda_main "$@"
fi
