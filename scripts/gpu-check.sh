#!/usr/bin/env bash
# The CUDA path on a real GPU, sized for a 10-minute slot on a lent GPU machine.
#
#   bash scripts/gpu-check.sh --build        here, without a GPU: csp-model with the `cuda` feature
#                                            (dev profile, see build), linked against stubs, gzipped to
#                                            .gpu/csp-model.gz (git-ignored) to carry to the GPU machine
#   bash scripts/gpu-check.sh [--out DIR]    on the GPU machine: parity and benchmarks
#
# The GPU machine has no Rust toolchain and no network, so nothing is built there: the binary
# travels (device tool: carry [".gpu"], command `bash scripts/gpu-check.sh --out "$OUT"`). There it
# finds the driver's libcuda and CUDA 13's cudart, cuBLAS, cuBLASLt, cuRAND and NVRTC (system
# folders, or the nvidia/cu13 wheels beside python3's PyTorch), then, with random weights:
#   1. parity: the same random batch of 2 on CPU and on cuda:0 for cspresnext50 (224),
#      cspdarknet53 (256) and cspresnext50_panet_spp (512); each output tensor must satisfy
#      max|gpu - cpu| <= 1e-3 * max|cpu| (f32);
#   2. half precision: the bundled trained models (models/default/) on cuda:0 in f16 and bf16
#      against the CPU in f32, within 5e-3 (f16; measured 4e-4 to 1.5e-3 on the CPU,
#      models/tests/parity.rs) and 4e-2 (bf16: 3 significant bits fewer, 8x coarser). Random
#      weights are no measure of half precision (see that test);
#   3. `csp-model bench --device cuda` at batch 1, 8 and 32 for the same three models in f32, f16
#      and bf16: images/s;
#   4. the server at saturation: `csp-server --device cuda:0` (GPU batching defaults) serving the
#      detector at 512, loaded by `csp-client bench` with 640x480 JPEGs over REST and gRPC at
#      concurrency 1 to 128 (when .gpu/ also holds csp-server.gz and csp-client.gz).
# python3 with numpy and safetensors (there with PyTorch) writes the inputs and compares outputs.
# Results: DIR/parity.txt, DIR/bench.jsonl, DIR/serve.jsonl, DIR/server.log and DIR/gpu-check.md
# (the tables for the README).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# (arch, input size) checked and benchmarked
MODELS=("cspresnext50 224" "cspdarknet53 256" "cspresnext50_panet_spp 512")
BATCHES=(1 8 32)
TOLERANCE=1e-3
# (bundled model, input size) for half precision, and each precision's tolerance
TRAINED=("shapes-classifier 64" "shapes-detector 160")
HALF_PRECISIONS=("f16 5e-3" "bf16 4e-2")

# The dev profile, in a target dir of its own (ignored): this workspace builds every dependency,
# candle included, at opt-level 3 in dev too, and the build raises the workspace crates to 3 as well.
# Not the CI check's dir: that one compiles candle's kernels unoptimised (scripts/nvcc-compile-check).
# Cold, candle's kernels compile with full optimisation: 33 minutes on a busy 2-core machine.
build() {
  local cuda_env
  cuda_env=$(bash scripts/cuda-toolchain.sh --env)
  eval "$cuda_env"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/cuda-build}
  # The workspace's own crates at opt-level 3 too (the server's preprocessing is in csp-models):
  # dependencies already are, and their build units stay fresh, so candle's kernels do not rebuild.
  export CARGO_PROFILE_DEV_OPT_LEVEL=3
  local args=(--locked --workspace --features cuda --bin csp-model --bin csp-server --bin csp-client)
  if [ ! -e "$CUDA_ROOT/lib/stubs/libcuda.so" ]; then
    # The stubs come from the symbols the compiled crates use, so the first build can only fail
    # at its link; a real compile error shows again in the second build.
    cargo build "${args[@]}" || echo "gpu-check: no link stubs yet; making them from the compiled crates" >&2
    bash scripts/cuda-toolchain.sh --link
  fi
  cargo build "${args[@]}"
  mkdir -p .gpu
  # Without debug info and gzipped (58 MiB -> 14 MiB for csp-model): the device tool carries 64 MiB in all.
  local bin
  for bin in csp-model csp-server csp-client; do
    objcopy --strip-debug "$CARGO_TARGET_DIR/debug/$bin" ".gpu/$bin.tmp"
    gzip -c ".gpu/$bin.tmp" >".gpu/$bin.gz"
    rm -f ".gpu/$bin.tmp"
  done
  echo "gpu-check: $(du -ch .gpu/*.gz | tail -1 | cut -f1) in .gpu/;" \
    "on the GPU machine: carry [\".gpu\"], run bash scripts/gpu-check.sh --out \"\$OUT\""
}

# Adds to LD_LIBRARY_PATH the folder of each CUDA library the loader cannot already find.
find_cuda_libs() {
  local dirs=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64
    /usr/local/cuda/targets/x86_64-linux/lib)
  local site
  if command -v python3 >/dev/null 2>&1; then
    for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
      dirs+=("$site"/nvidia/cu13/lib "$site"/nvidia/*/lib)
    done
  fi
  local lib dir found
  for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    ldconfig -p 2>/dev/null | grep -q "$lib " && continue
    found=""
    for dir in "${dirs[@]}"; do
      if [ -e "$dir/$lib" ]; then
        found=$dir
        break
      fi
    done
    if [ -n "$found" ]; then
      export LD_LIBRARY_PATH=$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
  done
}

# The carried binary NAME (gunzipped into a temporary folder), or nothing.
unpack() {
  local name=$1 dir
  [ -f "$repo/.gpu/$name.gz" ] || return 0
  dir=$(mktemp -d)
  gunzip -c "$repo/.gpu/$name.gz" >"$dir/$name" && chmod +x "$dir/$name" && echo "$dir/$name"
}

check() {
  local out=$1
  mkdir -p "$out"
  local bin=${CSP_MODEL:-}
  [ -n "$bin" ] || bin=$(unpack csp-model)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "gpu-check: no .gpu/csp-model.gz (nor CSP_MODEL); build it where Rust is: bash scripts/gpu-check.sh --build" >&2
    exit 1
  fi
  find_cuda_libs
  if ldd "$bin" | grep -q 'not found'; then
    echo "gpu-check: libraries missing for $bin:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
  fi
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1) || gpu="unknown GPU"
  echo "gpu-check: $(date -u +%F) on $gpu"

  local work failed=0 arch size
  work=$(mktemp -d)
  : >"$out/parity.txt"
  for spec in "${MODELS[@]}"; do
    read -r arch size <<<"$spec"
    # A failed step is recorded and the rest still run: a GPU slot is too short to rerun for each.
    if ! { "$bin" convert --arch "$arch" --out "$work/$arch.safetensors" >/dev/null &&
      write_input "$work/in-$size.safetensors" 2 "$size" &&
      timeout 300 "$bin" predict --weights "$work/$arch.safetensors" --device cpu \
        --input "$work/in-$size.safetensors" --output "$work/$arch-cpu.safetensors"; }; then
      echo "$arch: FAIL (a step above failed)" | tee -a "$out/parity.txt"
      failed=1
    else
      gpu_matches_cpu "$arch" "$TOLERANCE" "$work/$arch.safetensors" "$work/in-$size.safetensors" \
        "$work/$arch-cpu.safetensors" "$work/$arch-cuda.safetensors" "$out" || failed=1
    fi
  done
  local model weights precision dtype tolerance
  for spec in "${TRAINED[@]}"; do
    read -r model size <<<"$spec"
    weights=models/default/$model.safetensors
    if ! { write_input "$work/in-$size.safetensors" 2 "$size" &&
      timeout 300 "$bin" predict --weights "$weights" --device cpu \
        --input "$work/in-$size.safetensors" --output "$work/$model-cpu.safetensors"; }; then
      echo "$model: FAIL (the CPU reference failed)" | tee -a "$out/parity.txt"
      failed=1
      continue
    fi
    for precision in "${HALF_PRECISIONS[@]}"; do
      read -r dtype tolerance <<<"$precision"
      gpu_matches_cpu "$model ($dtype)" "$tolerance" "$weights" "$work/in-$size.safetensors" \
        "$work/$model-cpu.safetensors" "$work/$model-$dtype.safetensors" "$out" --dtype "$dtype" || failed=1
    done
  done

  : >"$out/bench.jsonl"
  local batch
  for spec in "${MODELS[@]}"; do
    read -r arch size <<<"$spec"
    for dtype in f32 f16 bf16; do
      for batch in "${BATCHES[@]}"; do
        if ! timeout 120 "$bin" bench --arch "$arch" --device cuda --dtype "$dtype" --batch "$batch" --size "$size" \
          --iters 20 --warmup 3 --json | tee -a "$out/bench.jsonl"; then
          echo "gpu-check: bench $arch $dtype batch $batch FAILED" >&2
          failed=1
        fi
      done
    done
  done
  : >"$out/serve.jsonl"
  local server client
  server=$(unpack csp-server)
  client=$(unpack csp-client)
  if [ -n "$server" ] && [ -n "$client" ]; then
    serve "$server" "$client" "$work/cspresnext50_panet_spp.safetensors" "$out" || failed=1
  else
    echo "gpu-check: no .gpu/csp-server.gz and csp-client.gz; skipping the server at saturation" >&2
  fi
  rm -rf "$work"
  report "$gpu" "$out" | tee "$out/gpu-check.md"
  [ "$failed" = 0 ] || {
    echo "gpu-check: FAILED (see above and $out/parity.txt)" >&2
    exit 1
  }
  echo "gpu-check: parity passed, benchmarks in $out/bench.jsonl"
}

# WEIGHTS on cuda:0 (with any further predict flags) on INPUT, against REFERENCE, the CPU's output:
# a line per tensor into OUT/parity.txt; fails when the prediction or the comparison does.
gpu_matches_cpu() {
  local label=$1 tolerance=$2 weights=$3 input=$4 reference=$5 got=$6 out=$7
  shift 7
  if ! timeout 300 "$bin" predict --weights "$weights" --device cuda "$@" --input "$input" --output "$got"; then
    echo "$label: FAIL (predict on cuda failed)" | tee -a "$out/parity.txt"
    return 1
  fi
  compare "$tolerance" "$label" "$reference" "$got" | tee -a "$out/parity.txt"
}

# The server on cuda:0 with its GPU defaults (batch 32), loaded over REST and gRPC until its
# throughput levels off. JPEG decoding runs on the machine's CPU cores, as it would in production.
serve() {
  local server=$1 client=$2 weights=$3 out=$4
  "$server" --model "det=$weights" --device cuda:0 --http-addr 127.0.0.1:18000 --grpc-addr 127.0.0.1:18001 \
    >"$out/server.log" 2>&1 &
  local pid=$! ok=1 protocol
  local i
  for i in $(seq 1 240); do
    "$client" --url http://127.0.0.1:18000 health >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! "$client" --url http://127.0.0.1:18000 health >/dev/null 2>&1; then
    echo "gpu-check: the server did not become ready (see server.log)" >&2
    tail -20 "$out/server.log" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  for protocol in rest grpc; do
    if ! timeout 150 "$client" --url http://127.0.0.1:18000 --grpc-url http://127.0.0.1:18001 bench --model det \
      --protocol "$protocol" --image-size 640x480 --concurrency 1,8,32,128 --duration 6s --warmup 2s \
      --json --quiet | tee -a "$out/serve.jsonl"; then
      echo "gpu-check: server bench over $protocol FAILED" >&2
      ok=0
    fi
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$ok" = 1 ]
}

# A uniform [0, 1) image batch [n, 3, size, size], seeded so every run sees the same.
write_input() {
  python3 - "$@" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import save_file

path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)
save_file({"input": x}, path)
EOF
}

# One line per output tensor; fails on a missing tensor, another shape, NaN, a relative error (to
# the CPU output's largest magnitude) above the tolerance, or outputs that do not depend on the input.
compare() {
  python3 - "$@" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file

tol, arch, cpu_path, gpu_path = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cpu, gpu = load_file(cpu_path), load_file(gpu_path)
ok = sorted(cpu) == sorted(gpu)
if not ok:
    print(f"{arch}: outputs differ: cpu {sorted(cpu)} gpu {sorted(gpu)}")
for name in sorted(set(cpu) & set(gpu)):
    ref, got = cpu[name].astype(np.float64), gpu[name].astype(np.float64)
    if ref.shape != got.shape:
        print(f"{arch} {name}: shape cpu {ref.shape} gpu {got.shape} FAIL")
        ok = False
        continue
    scale = max(float(np.abs(ref).max()), 1e-30)
    rel = float(np.abs(got - ref).max()) / scale
    # The two images must give different outputs, else agreement would prove nothing.
    spread = float(np.abs(ref[0] - ref[1]).max()) / scale
    good = bool(np.isfinite(got).all() and np.isfinite(ref).all() and rel <= tol and spread > 1e-2)
    ok &= good
    print(f"{arch} {name} {list(ref.shape)}: max|gpu-cpu|/max|cpu| = {rel:.2e}, "
          f"input spread {spread:.2f} {'ok' if good else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}

# The README's table: one row per model and batch.
report() {
  python3 - "$@" <<'EOF'
import datetime
import json
import sys

gpu, out = sys.argv[1], sys.argv[2]
print(f"GPU check {datetime.date.today()} on {gpu} (random weights, cuda:0):\n")
print("| model | input | dtype | batch | median ms | images/s |")
print("|---|---|---|---|---|---|")
for line in open(f"{out}/bench.jsonl"):
    r = json.loads(line)
    print(f"| {r['arch']} | {r['size']} | {r.get('dtype', 'f32')} | {r['batch']} | {r['median_ms']:.2f} | "
          f"{r['images_per_s']:.1f} |")
print()
serve = [json.loads(line) for line in open(f"{out}/serve.jsonl") if line.strip()]
if serve:
    print("\ncsp-server --device cuda:0 serving cspresnext50_panet_spp (512), csp-client bench with 640x480 JPEGs:\n")
    print("| protocol | concurrency | requests/s | p50 ms | p99 ms | server batch mean | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in serve:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"| {r['protocol']} | {r['concurrency']} | {r['requests_per_s']:.1f} | {fmt(r['p50_ms'])} | "
              f"{fmt(r['p99_ms'])} | {fmt(r['server_batch_mean'])} | {r['errors']} |")
print()
for line in open(f"{out}/parity.txt"):
    print(f"    {line.rstrip()}")
EOF
}

case ${1:-} in
  --build) build ;;
  --out) check "${2:?--out needs a folder}" ;;
  "") check "$repo/target/gpu-check" ;;
  -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *)
    echo "gpu-check: unknown argument $1 (--build, --out DIR, --help)" >&2
    exit 2
    ;;
esac
