"""Side-by-side CPU benchmark of the CSP detectors: `csp-model bench --cfg` against PyTorch eager on
the same official darknet cfg (../shared/reference/darknet), at the cfg's own input size, batch 1,
the same thread count, interleaved round by round so the machine's drift hits both sides alike.

PyTorch runs the network as a PyTorch user would write it: nn.Conv2d + nn.BatchNorm2d (eval) +
activation modules, routes as torch.cat, darknet's [maxpool] as F.max_pool2d, [upsample] as
F.interpolate (nearest), random weights, float32, torch.inference_mode(). Both sides compute the raw
head maps (the [yolo] layers' inputs); box decoding and NMS are not timed on either side.

    cargo build --release -p csp-models --bin csp-model
    ../ref-venv/bin/python scripts/bench_detectors.py --threads 2 --rounds 3

Prints one JSON line per measurement and a Markdown table of medians and ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import layer_channels, parse_cfg, relative  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "..", "shared", "reference", "darknet")
CFGS = ["csresnext50-panet-spp.cfg", "csdarknet53-panet-spp.cfg", "csresnet50-panet-spp.cfg",
        "csresnext50-panet-spp-original-optimal.cfg"]


def activation(name):
    return {"linear": nn.Identity(), "leaky": nn.LeakyReLU(0.1), "mish": nn.Mish(),
            "swish": nn.SiLU(), "logistic": nn.Sigmoid(), "relu": nn.ReLU()}[name]


class Darknet(nn.Module):
    """The layers of a darknet detector cfg as ordinary PyTorch modules."""

    def __init__(self, sections):
        super().__init__()
        self.sections = sections[1:]
        chans = layer_channels(sections)
        net = sections[0][1]
        self.layers = nn.ModuleList()
        for i, (kind, opts) in enumerate(self.sections):
            if kind == "convolutional":
                cin = chans[i - 1] if i > 0 else int(net["channels"])
                k, stride, groups = int(opts["size"]), int(opts.get("stride", 1)), int(opts.get("groups", 1))
                pad = k // 2 if opts.get("pad", "0") == "1" else int(opts.get("padding", 0))
                bn = opts.get("batch_normalize", "0") == "1"
                parts = [nn.Conv2d(cin, int(opts["filters"]), k, stride, pad, groups=groups, bias=not bn)]
                if bn:
                    norm = nn.BatchNorm2d(int(opts["filters"]))
                    norm.running_mean.normal_(0.0, 0.1)
                    norm.running_var.uniform_(0.5, 2.0)
                    parts.append(norm)
                parts.append(activation(opts.get("activation", "logistic")))
                self.layers.append(nn.Sequential(*parts))
            else:
                self.layers.append(nn.Identity())

    def forward(self, x):
        outs, heads = [], []
        for i, ((kind, opts), layer) in enumerate(zip(self.sections, self.layers)):
            prev = outs[i - 1] if i > 0 else x
            if kind == "convolutional":
                y = layer(prev)
            elif kind == "maxpool":
                size, stride = int(opts["size"]), int(opts.get("stride", 1))
                padding = int(opts.get("padding", size - 1))
                # Darknet pads (padding / 2) before and the rest after, with -inf.
                before = padding // 2
                y = F.pad(prev, (before, padding - before, before, padding - before), value=float("-inf"))
                y = F.max_pool2d(y, size, stride)
            elif kind == "route":
                y = torch.cat([outs[relative(l, i)] for l in opts["layers"].split(",")], dim=1)
            elif kind == "shortcut":
                other = outs[relative(opts["from"], i)]
                if other.shape[1] == prev.shape[1]:
                    y = prev + other
                else:
                    # Darknet adds the channels both have; the rest of `prev` passes through.
                    n = min(prev.shape[1], other.shape[1])
                    y = torch.cat([prev[:, :n] + other[:, :n], prev[:, n:]], dim=1)
                y = activation(opts.get("activation", "linear"))(y)
            elif kind == "upsample":
                y = F.interpolate(prev, scale_factor=int(opts["stride"]), mode="nearest")
            elif kind == "yolo":
                heads.append(prev)
                y = prev
            else:
                raise ValueError(f"layer type {kind} is not benchmarked")
            outs.append(y)
        return heads


def time_torch(model, x, warmup, iters):
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_ours(binary, cfg, size, threads, warmup, iters):
    out = subprocess.run([binary, "bench", "--cfg", cfg, "--size", str(size), "--threads", str(threads),
                          "--warmup", str(warmup), "--iters", str(iters), "--json"],
                         check=True, capture_output=True, text=True).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    return rec["median_ms"], rec["gflops_per_s"] * rec["median_ms"] / 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfgs", nargs="+", default=CFGS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "csp-model"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cfgs:
        path = os.path.join(REFERENCE, name)
        with open(path) as f:
            sections = parse_cfg(f.read())
        size = int(sections[0][1]["width"])
        torch.manual_seed(0)
        model = Darknet(sections).eval()
        x = torch.randn(1, int(sections[0][1]["channels"]), size, size)
        ours, theirs, gflops = [], [], 0.0
        for _ in range(args.rounds):
            ms, gflops = time_ours(args.binary, path, size, args.threads, args.warmup, args.iters)
            ours.append(ms)
            theirs.append(time_torch(model, x, args.warmup, args.iters))
            print(json.dumps({"cfg": name, "size": size, "fast": ours[-1], "eager": theirs[-1]}), flush=True)
        rows.append((name, size, gflops, statistics.median(ours), statistics.median(theirs)))
    print(f"\n{args.threads} threads, batch 1, medians of {args.rounds} interleaved rounds\n")
    print("| cfg | size | GFLOPs | csp-model fast ms | fast GFLOP/s | PyTorch eager ms | fast / eager |")
    print("|---|---|---|---|---|---|---|")
    for name, size, gflops, ours, theirs in rows:
        print(f"| {name} | {size} | {gflops:.1f} | {ours:.1f} | {gflops * 1e3 / ours:.0f} | {theirs:.1f} | "
              f"{ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
