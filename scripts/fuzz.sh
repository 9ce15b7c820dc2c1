#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (cargo-fuzz, nightly, AddressSanitizer) of the csp-fuzz
# targets: bash scripts/fuzz.sh [SECONDS] [TARGET...]   (default: 60 s each, every target)
#
# Each target starts from its seeds (fuzz/corpus/<target>) and regressions; what libFuzzer learns
# is kept in $CARGO_TARGET_DIR/fuzz-corpus/<target> for the next run. A crashing, leaking, hanging
# or memory-hungry input is copied to fuzz/regressions/<target>/, where the CI smoke test
# (cargo test -p csp-fuzz) replays it from then on; the script exits non-zero.
# FUZZ_SANITIZER=none builds without ASan (faster; panics are still caught).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for d in fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
sanitizer=${FUZZ_SANITIZER:-address}
found=0
for t in "${targets[@]}"; do
    [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no target \`$t\` (no fuzz/corpus/$t)" >&2; exit 2; }
    work="$CARGO_TARGET_DIR/fuzz-corpus/$t"
    artifacts="$CARGO_TARGET_DIR/fuzz-artifacts/$t"
    mkdir -p "$work" "$artifacts"
    corpora=("$work" "fuzz/corpus/$t")
    [ -d "fuzz/regressions/$t" ] && corpora+=("fuzz/regressions/$t")
    echo "== $t: ${seconds} s (sanitizer: $sanitizer)"
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer --sanitizer "$sanitizer" "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 || status=$?
    if [ "$status" -ne 0 ]; then
        found=1
        kept=0
        for f in "$artifacts"/*; do
            [ -f "$f" ] || continue
            mkdir -p "fuzz/regressions/$t"
            cp "$f" "fuzz/regressions/$t/"
            kept=1
            echo "fuzz.sh: $t failed on $(basename "$f"): kept as fuzz/regressions/$t/$(basename "$f")"
        done
        # No input to keep: the target did not build or libFuzzer itself failed (see above).
        [ "$kept" -eq 1 ] || echo "fuzz.sh: $t failed (exit $status) without a crashing input" >&2
    fi
done
if [ "$found" -ne 0 ]; then
    echo "fuzz.sh: failures found; fix them and commit the inputs in fuzz/regressions/" >&2
    exit 1
fi
echo "fuzz.sh: no failures"
