#!/usr/bin/env python3
"""Side-by-side CPU benchmark: `csp-model bench` against PyTorch (and ONNX Runtime when installed)
on the same models, batch sizes, input size and thread count, interleaved in one sitting so the
machine's drift hits both sides alike. Prints a Markdown table of median ms per batch and ratios.

Needs a Python with torch + timm (+ onnx/onnxruntime for the ONNX column), e.g. the venv made as in
../shared/bench/README.md, and a release build of csp-model:

    cargo build --release -p csp-models --bin csp-model
    ../ref-venv/bin/python scripts/bench_vs_torch.py --threads 2 --rounds 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json_lines(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def ours(binary, model, batch, size, threads, iters, engine):
    rec = run_json_lines([binary, "bench", "--arch", model, "--batch", str(batch), "--size", str(size),
                          "--threads", str(threads), "--iters", str(iters), "--warmup", "2", "--engine", engine,
                          "--json"])
    return rec[-1]["median_ms"], rec[-1]["gflops_per_s"]


def theirs(python, baseline, model, mode, batch, size, threads, iters):
    recs = run_json_lines([python, baseline, "--model", model, "--mode", mode, "--batch", str(batch),
                           "--size", str(size), "--threads", str(threads), "--runs", str(iters),
                           "--warmup", "2", "--max-busy", "1.0", "--max-wait", "0"])
    for r in recs:
        for key in ("median_ms", "ms_median", "median"):
            if key in r:
                return float(r[key])
    raise RuntimeError(f"no median in {recs}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cspresnet50", "cspresnext50", "cspdarknet53"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; medians are reported")
    p.add_argument("--modes", nargs="+", default=["eager"], help="torch_baseline.py modes (eager, onnx, compile, ...)")
    p.add_argument("--engines", nargs="+", default=["fast", "candle"], help="csp-model --engine values; the first is compared")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "csp-model"))
    p.add_argument("--baseline", default=os.path.join(ROOT, "..", "shared", "bench", "torch_baseline.py"))
    a = p.parse_args()
    rows = []
    for model in a.models:
        for batch in a.batch:
            got = {e: [] for e in a.engines}
            gflops = []
            for _ in range(a.rounds):
                for engine in a.engines:
                    ms, rate = ours(a.binary, model, batch, a.size, a.threads, a.iters, engine)
                    got[engine].append(ms)
                    if engine == a.engines[0]:
                        gflops.append(rate)
                for mode in a.modes:
                    got.setdefault(mode, []).append(
                        theirs(sys.executable, a.baseline, model, mode, batch, a.size, a.threads, a.iters))
            med = {k: statistics.median(v) for k, v in got.items()}
            med["gflops"] = statistics.median(gflops)
            rows.append((model, batch, med))
            print(json.dumps({"model": model, "batch": batch, **med}), file=sys.stderr, flush=True)
    first = a.engines[0]
    name = lambda m: "ONNX Runtime" if m == "onnx" else f"PyTorch {m}"
    head = "| model | batch | " + " | ".join(f"csp-model {e} ms" for e in a.engines) + f" | {first} GFLOP/s | "
    head += " | ".join(f"{name(m)} ms" for m in a.modes) + " | "
    head += " | ".join(f"{first} / {e}" for e in a.engines[1:] + a.modes) + " |"
    print(head)
    print("|" + "---|" * (3 + 2 * len(a.engines) - 1 + 2 * len(a.modes)))
    for model, batch, med in rows:
        ours_cells = [f"{med[e]:.1f}" for e in a.engines]
        cells = [f"{med[m]:.1f}" for m in a.modes]
        ratios = [f"{med[first] / med[k]:.2f}" for k in a.engines[1:] + a.modes]
        print(f"| {model} | {batch} | " + " | ".join(ours_cells) + f" | {med['gflops']:.0f} | "
              + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
