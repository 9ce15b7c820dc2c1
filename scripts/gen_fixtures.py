#!/usr/bin/env python3
"""Numerical parity fixtures for `models/tests/parity.rs`.

Run from the repository root (any Python with torch, timm 1.0, numpy, safetensors and
opencv-python-headless<5 will do):

    /work/ref-venv/bin/python scripts/gen_fixtures.py

It rewrites `models/tests/fixtures/` and is deterministic: every random draw comes from fixed seeds,
references are computed in float64 on one thread, so a rerun gives the same files.

What it writes:
- timm: reduced-width CSPResNet-50 / CSPResNeXt-50 / CSPDarknet-53 (timm's own `CspNet`, same depths
  and ratios, widths divided by 16; CSPResNeXt keeps grouped 3x3 convs but with 8 groups instead
  of 32, which the reduced widths could not divide). Batch-norm affine parameters and running
  statistics are randomised so folding batch norm is really exercised. Per model:
  `timm_<arch>.safetensors` (state dict), `timm_<arch>_io.safetensors` (`input`, `logits`) and an
  entry in `timm_reduced.json` with the widths used.
- `timm_full_keys.json`: state-dict names and shapes of the full-size timm models (1000 classes).
- darknet: small `.cfg` files covering the layer types the loader supports, random `.weights` and
  reference outputs from the independent darknet implementation below (`darknet_forward`),
  cross-checked against OpenCV's darknet importer (all but `route_groups`, whose multi-input
  grouped [route] OpenCV 4.x does not implement as darknet does). Listed in `darknet.json`.
- darknet detectors: the official csresnext50-panet-spp.cfg and csdarknet53-panet-spp.cfg (read
  from ../shared/reference/darknet) scaled down (filters / 48, 3 classes, 96x64 input), and a small
  cfg with [sam], [scale_channels], `maxpool_depth` max-out, mish, SPP, upsample and route groups.
  Random `.weights`; reference outputs of every head (the input of each [yolo] layer) from
  `detector_forward`. OpenCV cross-checks every head of the scaled cfgs; in the small cfg it can
  check only up to the [sam] output, because it reads `maxpool_depth` as an ordinary max pool.
  Listed in `darknet_detectors.json`.
"""

import json
import math
import os
import struct
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "models", "tests", "fixtures")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ---------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------

# (arch, stem width, stage widths, groups of the 3x3 convs): timm's widths divided by 16.
TIMM_REDUCED = [
    ("cspresnet50", 4, (8, 16, 32, 64), 1),
    ("cspresnext50", 4, (16, 32, 64, 128), 8),
    ("cspdarknet53", 2, (4, 8, 16, 32, 64), 1),
]
TIMM_CLASSES = 10
TIMM_INPUT = (2, 3, 64, 64)


def randomise_batch_norm(model, gen):
    """Random affine parameters, then running statistics measured on random inputs and perturbed,
    so activations stay O(1) while eval mode differs from any identity batch norm."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64, generator=gen))
        for bn in bns:
            c = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.2 * std)
            bn.running_var.mul_(torch.rand(c, generator=gen) * 0.8 + 0.6)
    model.eval()


def timm_fixtures(manifest):
    from timm.models.cspnet import CspNet, model_cfgs

    for k, (arch, stem, widths, groups) in enumerate(TIMM_REDUCED):
        torch.manual_seed(1000 + k)
        gen = torch.Generator().manual_seed(2000 + k)
        base = model_cfgs[arch]
        cfg = replace(base, stem=replace(base.stem, out_chs=stem), stages=replace(base.stages, out_chs=widths, groups=groups))
        model = CspNet(cfg, num_classes=TIMM_CLASSES)
        with torch.no_grad():
            # timm initialises the classifier at std 0.01 and zero bias: make it matter.
            model.head.fc.weight.normal_(0.0, 0.3, generator=gen)
            model.head.fc.bias.normal_(0.0, 0.3, generator=gen)
        randomise_batch_norm(model, gen)
        state = {n: t.detach().contiguous().clone() for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")}
        x = torch.randn(*TIMM_INPUT, generator=gen)
        with torch.no_grad():
            logits = model.double()(x.double())
        weights_file = f"timm_{arch}.safetensors"
        io_file = f"timm_{arch}_io.safetensors"
        save_file(state, os.path.join(OUT, weights_file))
        save_file({"input": x, "logits": logits.float().contiguous()}, os.path.join(OUT, io_file))
        manifest[arch] = {
            "stem_out_channels": stem,
            "out_channels": list(widths),
            "groups": groups,
            "num_classes": TIMM_CLASSES,
            "weights": weights_file,
            "io": io_file,
        }
        print(f"timm {arch}: {sum(t.numel() for t in state.values())} values, max |logit| {logits.abs().max():.3f}")


def timm_full_keys():
    from timm.models.cspnet import CspNet, model_cfgs

    out = {}
    for arch, _, _, _ in TIMM_REDUCED:
        model = CspNet(model_cfgs[arch], num_classes=1000, device="meta")
        out[arch] = {n: list(t.shape) for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")}
    return out


# ---------------------------------------------------------------------------------------------
# darknet
# ---------------------------------------------------------------------------------------------

# Each cfg exercises a different mix; comments in the cfg text name what a layer is for.
DARKNET_CFGS = {
    # A classifier: ends in [avgpool], a 1x1 conv with bias and [softmax].
    "classifier": """[net]
width=26
height=26
channels=3

# 0: 26x26x16
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

# 1: size 2 stride 2 -> 13x13
[maxpool]
size=2
stride=2

# 2: grouped conv, mish
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
groups=4
activation=mish

# 3
[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=linear

# 4: size 3 stride 1, default padding keeps 13x13
[maxpool]
size=3
stride=1

# 5: concat 32 + 32
[route]
layers=-1,-3

# 6: second half of 64 channels
[route]
layers=-1
groups=2
group_id=1

# 7
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=logistic

# 8: equal channels (16 + 16)
[shortcut]
from=-7
activation=linear

# 9: size 2 stride 2 on an odd map: 13 -> 7, the last window half outside
[maxpool]
size=2
stride=2

# 10
[convolutional]
batch_normalize=1
filters=24
size=3
stride=1
pad=1
activation=leaky

# 11: 24 channels plus 16: only the leading 16 add
[shortcut]
from=-2
activation=leaky

# 12
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

# 13: 8 channels plus 24: the output keeps 8
[shortcut]
from=-2
activation=linear

# 14: size 5 stride 1 keeps 7x7
[maxpool]
size=5
stride=1

# 15
[upsample]
stride=2

# 16: no padding, stride 2: 14 -> 6
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=0
activation=mish

# 17
[avgpool]

# 18: the classifier, conv bias and no batch norm
[convolutional]
filters=10
size=1
stride=1
pad=1
activation=linear

[softmax]
groups=1
""",
    # A feature extractor in the CSP style: split by [route] groups, absolute route indices,
    # upsample + concat across scales, output a raw map.
    "csp_features": """[net]
width=32
height=32
channels=3

# 0: 16x16x16
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

# 1: the cross path, first half
[route]
layers=-1
groups=2
group_id=0

# 2: the block path, second half
[route]
layers=0
groups=2
group_id=1

# 3
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=mish

# 4
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

# 5: residual
[shortcut]
from=-3
activation=linear

# 6: fuse cross + block paths by absolute index
[route]
layers=1,5

# 7: 8x8x24, grouped downsampling
[convolutional]
batch_normalize=1
filters=24
size=3
stride=2
pad=1
groups=8
activation=leaky

# 8: 4x4x32
[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

# 9: back to 8x8
[upsample]
stride=2

# 10: concat with the 8x8 map: 32 + 24
[route]
layers=-1,7

# 11: size 5 stride 1 (SPP style)
[maxpool]
size=5
stride=1

# 12: three inputs: 56 + 56 + 24
[route]
layers=-1,-2,7

# 13: a head conv with bias and logistic output
[convolutional]
size=1
stride=1
pad=1
filters=12
activation=logistic
""",
    # Default activation (logistic), conv without batch norm inside the net, odd sizes, and an old
    # weights header (minor 1: `seen` is 32-bit).
    "plain": """[net]
height=15
width=15
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1

[maxpool]
size=2
stride=2

[convolutional]
filters=12
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=12
size=1
stride=1
pad=0
activation=linear

[shortcut]
from=-2
activation=leaky

[upsample]
stride=3

[maxpool]
size=3
stride=1

[avgpool]

[softmax]
""",
    # [route] with groups over several inputs: each contributes its own slice (darknet's
    # forward_route). OpenCV 4.x slices only the concatenation, so it cannot check this one.
    "route_groups": """[net]
width=8
height=8
channels=3

# 0
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

# 1
[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=mish

# 2: second halves of 8 and 4 channels: 4 + 2
[route]
layers=0,1
groups=2
group_id=1

# 3
[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
activation=leaky
""",
}
# (major, minor, revision) of each cfg's weights file.
DARKNET_HEADERS = {"classifier": (0, 2, 0), "csp_features": (0, 2, 0), "plain": (0, 1, 0), "route_groups": (0, 2, 0)}
# Cfgs OpenCV's importer runs with darknet's semantics.
OPENCV_CHECKED = {"classifier", "csp_features", "plain"}


def parse_cfg(text):
    """[(section, {key: value})] in file order, comments and blank lines dropped."""
    sections = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
        else:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    return sections


def relative(index, here):
    index = int(index)
    return here + index if index < 0 else index


def layer_channels(sections):
    """Input channels of the net and output channels per layer, for weight shapes."""
    net = sections[0][1]
    chans = []
    for i, (kind, opts) in enumerate(sections[1:]):
        prev = chans[i - 1] if i > 0 else int(net["channels"])
        if kind == "convolutional":
            c = int(opts["filters"])
        elif kind == "route":
            groups = int(opts.get("groups", 1))
            c = sum(chans[relative(l, i)] // groups for l in opts["layers"].split(","))
        else:
            c = prev
        chans.append(c)
    return chans


def random_darknet_weights(sections, rng):
    """Per conv, in file order: bias, [scale, mean, var], weights, as darknet stores them."""
    net = sections[0][1]
    chans = layer_channels(sections)
    convs = []
    for i, (kind, opts) in enumerate(sections[1:]):
        if kind != "convolutional":
            continue
        cin = chans[i - 1] if i > 0 else int(net["channels"])
        n, k, g = int(opts["filters"]), int(opts["size"]), int(opts.get("groups", 1))
        fan_in = cin // g * k * k
        conv = {"bias": rng.normal(0.0, 0.2, n)}
        if opts.get("batch_normalize", "0") == "1":
            conv["scale"] = rng.uniform(0.5, 1.5, n)
            conv["mean"] = rng.normal(0.0, 0.3, n)
            conv["var"] = rng.uniform(0.5, 2.0, n)
        conv["weights"] = rng.normal(0.0, math.sqrt(2.0 / fan_in), (n, cin // g, k, k))
        convs.append({key: v.astype(np.float32) for key, v in conv.items()})
    return convs


def write_darknet_weights(path, convs, header):
    major, minor, revision = header
    with open(path, "wb") as f:
        f.write(struct.pack("<3i", major, minor, revision))
        # `seen` (images seen in training) is 64-bit from version 0.2 on.
        f.write(struct.pack("<Q" if major * 10 + minor >= 2 else "<I", 12345))
        for conv in convs:
            for key in ("bias", "scale", "mean", "var", "weights"):
                if key in conv:
                    f.write(conv[key].astype("<f4").tobytes())


def activate(x, name):
    if name == "linear":
        return x
    if name == "leaky":
        return torch.where(x > 0, x, 0.1 * x)
    if name == "mish":
        return x * torch.tanh(F.softplus(x, beta=1, threshold=20))
    if name == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"activation {name} not in the fixtures")


def darknet_max_pool(x, size, stride, padding):
    """Darknet: out = (in + padding - size) / stride + 1, windows start at -padding/2, outside is -inf."""
    _, _, h, w = x.shape
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    offset = padding // 2
    y = torch.full((x.shape[0], x.shape[1], out_h, out_w), -math.inf, dtype=x.dtype)
    for r in range(out_h):
        for c in range(out_w):
            r0, c0 = r * stride - offset, c * stride - offset
            win = x[:, :, max(r0, 0) : max(r0 + size, 0), max(c0, 0) : max(c0 + size, 0)]
            if win.numel():
                y[:, :, r, c] = win.amax(dim=(2, 3))
    return y


def darknet_forward(sections, convs, x, bn_eps):
    """Every layer's output for a float64 batch; the semantics of darknet's layers, written out."""
    outs = []
    weights = iter(convs)
    for i, (kind, opts) in enumerate(sections[1:]):
        prev = outs[i - 1] if i > 0 else x
        if kind == "convolutional":
            p = next(weights)
            t = {key: torch.from_numpy(v).double() for key, v in p.items()}
            k, stride, groups = int(opts["size"]), int(opts.get("stride", 1)), int(opts.get("groups", 1))
            pad = k // 2 if opts.get("pad", "0") == "1" else int(opts.get("padding", 0))
            y = F.conv2d(prev, t["weights"], None, stride, pad, 1, groups)
            col = lambda v: v.view(1, -1, 1, 1)
            if "scale" in t:
                y = (y - col(t["mean"])) / torch.sqrt(col(t["var"]) + bn_eps) * col(t["scale"])
            y = y + col(t["bias"])
            y = activate(y, opts.get("activation", "logistic"))
        elif kind == "maxpool":
            size, stride = int(opts["size"]), int(opts.get("stride", 1))
            y = darknet_max_pool(prev, size, stride, int(opts.get("padding", size - 1)))
        elif kind == "avgpool":
            y = prev.mean(dim=(2, 3), keepdim=True)
        elif kind == "route":
            groups, gid = int(opts.get("groups", 1)), int(opts.get("group_id", 0))
            parts = []
            for l in opts["layers"].split(","):
                src = outs[relative(l, i)]
                n = src.shape[1] // groups
                parts.append(src[:, gid * n : (gid + 1) * n])
            y = torch.cat(parts, dim=1)
        elif kind == "shortcut":
            src = outs[relative(opts["from"], i)]
            y = prev.clone()
            n = min(prev.shape[1], src.shape[1])
            y[:, :n] += src[:, :n]
            y = activate(y, opts.get("activation", "linear"))
        elif kind == "upsample":
            s = int(opts["stride"])
            y = prev.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        elif kind == "softmax":
            y = torch.softmax(prev.flatten(1), dim=1).view(prev.shape)
        else:
            raise ValueError(f"layer type {kind} not in the fixtures")
        outs.append(y)
    return outs


def explicit_activations(sections):
    """The cfg with every conv's activation spelled out: OpenCV's importer defaults to linear
    where darknet defaults to logistic."""
    lines = []
    for kind, opts in sections:
        if kind == "convolutional":
            opts = {"activation": "logistic", **opts}
        lines.append(f"[{kind}]")
        lines += [f"{key}={value}" for key, value in opts.items()]
        lines.append("")
    return "\n".join(lines)


def opencv_outputs(sections, weights_path, x):
    """OpenCV's darknet importer on each image (it mishandles batches for some layers)."""
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "net.cfg")
        with open(cfg_path, "w") as f:
            f.write(explicit_activations(sections))
        net = cv2.dnn.readNetFromDarknet(cfg_path, weights_path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    ys = []
    for img in x:
        net.setInput(img[None].numpy().astype(np.float32))
        ys.append(np.array(net.forward()).reshape(1, -1))
    return np.concatenate(ys, axis=0)


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def darknet_fixtures():
    rng = np.random.default_rng(7)
    manifest = []
    for name, text in DARKNET_CFGS.items():
        sections = parse_cfg(text)
        net = sections[0][1]
        convs = random_darknet_weights(sections, rng)
        cfg_file, weights_file, io_file = f"darknet_{name}.cfg", f"darknet_{name}.weights", f"darknet_{name}_io.safetensors"
        cfg_path, weights_path = os.path.join(OUT, cfg_file), os.path.join(OUT, weights_file)
        with open(cfg_path, "w") as f:
            f.write(text)
        write_darknet_weights(weights_path, convs, DARKNET_HEADERS[name])

        shape = (2, int(net["channels"]), int(net["height"]), int(net["width"]))
        x = torch.from_numpy(rng.uniform(0.0, 1.0, shape).astype(np.float32))
        outs = darknet_forward(sections, convs, x.double(), 1e-5)
        # `Model::forward` returns logits: the layer before a trailing softmax.
        last = len(outs) - 2 if sections[-1][0] == "softmax" else len(outs) - 1
        ref = outs[last]

        print(f"darknet {name}: output {list(ref.shape)}, max |ref| {ref.abs().max():.3f}")
        if name in OPENCV_CHECKED:
            # OpenCV uses batch-norm eps 1e-6: compare it with our forward at that eps. It runs
            # the whole cfg, softmax included, so compare the final outputs.
            ours_cv = darknet_forward(sections, convs, x.double(), 1e-6)[-1].flatten(1).numpy()
            cv_err = max_rel(opencv_outputs(sections, weights_path, x), ours_cv)
            print(f"  OpenCV vs ours (eps 1e-6): max rel err {cv_err:.2e}")
            assert cv_err < 1e-5, f"{name}: OpenCV disagrees with the reference implementation ({cv_err})"

        save_file({"input": x, "output": ref.float().contiguous()}, os.path.join(OUT, io_file))
        manifest.append({
            "name": name,
            "cfg": cfg_file,
            "weights": weights_file,
            "io": io_file,
            "output_shape": list(ref.shape),
            "layers": len(sections) - 1,
        })
    return manifest



# ---------------------------------------------------------------------------------------------
# darknet detectors
# ---------------------------------------------------------------------------------------------

REFERENCE_CFGS = os.path.join(ROOT, "..", "shared", "reference", "darknet")
# Classes of every fixture detector: the conv before each [yolo] gets len(mask) * (classes + 5) filters.
DETECTOR_CLASSES = 3
# The official detector cfgs, scaled down: (fixture name, reference cfg, filter divisor,
# [net] (height, width)). Non-square inputs catch a swapped height and width.
DETECTOR_SCALED = [
    ("csresnext50_panet_spp", "csresnext50-panet-spp.cfg", 48, (64, 96)),
    ("csdarknet53_panet_spp", "csdarknet53-panet-spp.cfg", 48, (64, 96)),
]
# A small detector with the YOLOv4-family layers the official CSP cfgs do not use.
DETECTOR_LAYERS = """[net]
width=32
height=24
channels=3

# 0: 8x24x32
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

# 1: 16x12x16
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

# 2: CSP split, the second half (8)
[route]
layers=-1
groups=2
group_id=1

# 3
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=mish

# 4
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

# 5: residual
[shortcut]
from=-2
activation=linear

# 6: block path + all of layer 1: 8 + 16
[route]
layers=-1,1

# 7: 16x12x16
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

# 8: channel attention: global mean ...
[avgpool]

# 9: ... a 16x1x1 gate ...
[convolutional]
filters=16
size=1
stride=1
pad=1
activation=logistic

# 10: ... scaling layer 7 per channel
[scale_channels]
from=-3

# 11: spatial attention gate
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=logistic

# 12: gate * layer 10
[sam]
from=-2

# 13: channel max-out 16 -> 8 (channel k goes to k mod 8)
[maxpool]
maxpool_depth=1
out_channels=8

# 14: 16x6x8
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

# 15-20: SPP, max-pools 5, 9 and 13 with stride 1
[maxpool]
stride=1
size=5

[route]
layers=-2

[maxpool]
stride=1
size=9

[route]
layers=-4

[maxpool]
stride=1
size=13

# 20: 4 x 16
[route]
layers=-1,-3,-5,-6

# 21
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=mish

# 22: head 0 at 6x8
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

# 23: YOLOv4-style options
[yolo]
mask = 3,4,5
anchors = 10,13,  16,30,  33,23,  30,61,  62,45,  59,119
classes=3
num=6
jitter=.3
ignore_thresh = .7
truth_thresh = 1
scale_x_y = 1.1
iou_thresh=0.213
cls_normalizer=1.0
iou_normalizer=0.07
iou_loss=ciou
nms_kind=greedynms
beta_nms=0.6
max_delta=5
random=1

# 24
[route]
layers=-3

# 25
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

# 26: 8x12x16
[upsample]
stride=2

# 27: 8 + the max-out's 8
[route]
layers=-1,13

# 28
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=mish

# 29: head 1 at 12x16
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

# 30
[yolo]
mask = 0,1,2
anchors = 10,13,  16,30,  33,23,  30,61,  62,45,  59,119
classes=3
num=6
scale_x_y = 1.2
nms_kind=diounms
beta_nms=0.6
"""

def is_maxout(kind, opts):
    return kind == "maxpool" and opts.get("maxpool_depth", "0") == "1"


def detector_channels(sections):
    """Output channels per layer, with the detector layers `layer_channels` does not know."""
    chans = []
    for i, (kind, opts) in enumerate(sections[1:]):
        prev = chans[i - 1] if i > 0 else int(sections[0][1]["channels"])
        if kind == "convolutional":
            c = int(opts["filters"])
        elif kind == "route":
            groups = int(opts.get("groups", 1))
            c = sum(chans[relative(l, i)] // groups for l in opts["layers"].split(","))
        elif is_maxout(kind, opts):
            c = int(opts["out_channels"])
        elif kind == "scale_channels":
            c = chans[relative(opts["from"], i)]
        else:
            c = prev
        chans.append(c)
    return chans


def detector_weights(sections, rng):
    """Random conv parameters in file order, as `random_darknet_weights` draws them."""
    chans = detector_channels(sections)
    convs = []
    for i, (kind, opts) in enumerate(sections[1:]):
        if kind != "convolutional":
            continue
        cin = chans[i - 1] if i > 0 else int(sections[0][1]["channels"])
        n, k, g = int(opts["filters"]), int(opts["size"]), int(opts.get("groups", 1))
        conv = {"bias": rng.normal(0.0, 0.2, n)}
        if opts.get("batch_normalize", "0") == "1":
            conv["scale"] = rng.uniform(0.5, 1.5, n)
            conv["mean"] = rng.normal(0.0, 0.3, n)
            conv["var"] = rng.uniform(0.5, 2.0, n)
        conv["weights"] = rng.normal(0.0, math.sqrt(2.0 / (cin // g * k * k)), (n, cin // g, k, k))
        convs.append({key: v.astype(np.float32) for key, v in conv.items()})
    return convs


def detector_forward(sections, convs, x, bn_eps):
    """Every layer's output for a float64 batch: darknet's semantics, with [sam], [scale_channels],
    channel max-out and [yolo] (which passes its input through: decoding is not a layer output)."""
    outs = []
    weights = iter(convs)
    for i, (kind, opts) in enumerate(sections[1:]):
        prev = outs[i - 1] if i > 0 else x
        src = lambda key: outs[relative(opts[key], i)]
        if kind == "convolutional":
            t = {key: torch.from_numpy(v).double() for key, v in next(weights).items()}
            k, stride, groups = int(opts["size"]), int(opts.get("stride", 1)), int(opts.get("groups", 1))
            pad = k // 2 if opts.get("pad", "0") == "1" else int(opts.get("padding", 0))
            y = F.conv2d(prev, t["weights"], None, stride, pad, 1, groups)
            col = lambda v: v.view(1, -1, 1, 1)
            if "scale" in t:
                y = (y - col(t["mean"])) / torch.sqrt(col(t["var"]) + bn_eps) * col(t["scale"])
            y = activate(y + col(t["bias"]), opts.get("activation", "logistic"))
        elif is_maxout(kind, opts):
            m = int(opts["out_channels"])
            n, c, h, w = prev.shape
            # Channel k = j * m + g lands in group g.
            y = prev.reshape(n, c // m, m, h, w).amax(dim=1)
        elif kind == "maxpool":
            size, stride = int(opts["size"]), int(opts.get("stride", 1))
            y = darknet_max_pool(prev, size, stride, int(opts.get("padding", size - 1)))
        elif kind == "avgpool":
            y = prev.mean(dim=(2, 3), keepdim=True)
        elif kind == "route":
            groups, gid = int(opts.get("groups", 1)), int(opts.get("group_id", 0))
            parts = []
            for l in opts["layers"].split(","):
                part = outs[relative(l, i)]
                n = part.shape[1] // groups
                parts.append(part[:, gid * n : (gid + 1) * n])
            y = torch.cat(parts, dim=1)
        elif kind == "shortcut":
            other = src("from")
            assert other.shape[2:] == prev.shape[2:], "the fixtures only add maps of equal size"
            # Different channel counts: only the leading channels both have are added.
            n = min(prev.shape[1], other.shape[1])
            y = torch.cat([prev[:, :n] + other[:, :n], prev[:, n:]], dim=1)
            y = activate(y, opts.get("activation", "linear"))
        elif kind == "upsample":
            s = int(opts["stride"])
            y = prev.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        elif kind == "sam":
            y = prev * src("from")
        elif kind == "scale_channels":
            assert prev.shape[2:] == (1, 1)
            y = src("from") * prev
        elif kind == "yolo":
            y = prev
        else:
            raise ValueError(f"layer type {kind} not in the detector fixtures")
        outs.append(y)
    return outs


def scale_down(sections, divisor, size, classes):
    """A reference cfg at `size` with every conv's filters divided by `divisor`, rounded up to an
    even number (so [route] groups=2 still splits, and unequal widths stay unequal), grouped convs keeping as many groups as the new widths allow,
    and `classes` classes in every [yolo] (and its conv). Training-only [net] settings are dropped."""
    height, width = size
    net = {"width": str(width), "height": str(height), "channels": sections[0][1].get("channels", "3")}
    out = [("net", net)]
    chans = [int(net["channels"])]
    body = sections[1:]
    for i, (kind, opts) in enumerate(body):
        opts = dict(opts)
        here = len(out) - 1
        if kind == "convolutional":
            nxt = body[i + 1] if i + 1 < len(body) else None
            if nxt is not None and nxt[0] == "yolo":
                filters = len(nxt[1]["mask"].split(",")) * (classes + 5)
            else:
                filters = max(2, -(-int(opts["filters"]) // divisor))
                filters += filters % 2
            opts["filters"] = str(filters)
            if int(opts.get("groups", 1)) > 1:
                opts["groups"] = str(math.gcd(int(opts["groups"]), chans[-1], filters))
        elif kind == "yolo":
            opts["classes"] = str(classes)
        out.append((kind, opts))
        chans = [int(net["channels"])] + detector_channels(out)
        assert len(chans) == here + 2
    return out


def cfg_text(sections, header):
    lines = [f"# {line}" for line in header] + [""]
    for kind, opts in sections:
        lines.append(f"[{kind}]")
        lines += [f"{key}={value}" for key, value in opts.items()]
        lines.append("")
    return "\n".join(lines)


def head_layers(sections):
    return [i for i, (kind, _) in enumerate(sections[1:]) if kind == "yolo"]


def opencv_layer_outputs(sections, weights_path, x, names):
    """Outputs of OpenCV's darknet importer layers `names`, run on each image (it mishandles
    batches for some layers) and stacked."""
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "net.cfg")
        with open(cfg_path, "w") as f:
            f.write(explicit_activations(sections))
        net = cv2.dnn.readNetFromDarknet(cfg_path, weights_path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    per_image = []
    for img in x:
        net.setInput(img[None].numpy().astype(np.float32))
        per_image.append([np.array(y) for y in net.forward(names)])
    return [np.concatenate([outs[k] for outs in per_image], axis=0) for k in range(len(names))]


def opencv_head_checks(sections):
    """(what, OpenCV layer name, our layer index) for every head. OpenCV's [yolo] outputs decoded
    boxes, so compare the conv before it: with no batch norm and a linear activation, OpenCV's
    `conv_<index>` is that layer's whole output, the head's input."""
    checks = []
    for k, i in enumerate(head_layers(sections)):
        kind, opts = sections[i]  # sections[0] is [net]: this is layer i - 1
        assert kind == "convolutional" and opts.get("activation") == "linear" and opts.get("batch_normalize", "0") == "0"
        checks.append((f"head {k}", f"conv_{i - 1}", i - 1))
    return checks


def detector_cases():
    """(name, sections, cfg text, batch, OpenCV checks, what OpenCV cannot check)."""
    cases = []
    for name, ref, divisor, size in DETECTOR_SCALED:
        with open(os.path.join(REFERENCE_CFGS, ref)) as f:
            sections = scale_down(parse_cfg(f.read()), divisor, size, DETECTOR_CLASSES)
        header = [
            f"{ref} scaled down by scripts/gen_fixtures.py: filters / {divisor} rounded up to even,",
            f"groups reduced to fit, {DETECTOR_CLASSES} classes, {size[1]}x{size[0]} input.",
        ]
        cases.append((name, sections, cfg_text(sections, header), 1, opencv_head_checks(sections), None))
    # OpenCV 4.x reads `maxpool_depth=1` as an ordinary 2x2 max pool, so it can check this cfg only
    # up to the layer before the max-out (layer 12, the [sam] output, after [scale_channels]).
    gap = "maxpool_depth max-out (layer 13) and everything after it; checked up to the [sam] output"
    cases.append(("detector_layers", parse_cfg(DETECTOR_LAYERS), DETECTOR_LAYERS, 2, [("sam", "sam_12", 12)], gap))
    return cases


def detector_fixtures():
    rng = np.random.default_rng(11)
    manifest = []
    for name, sections, text, batch, opencv_checks, opencv_gap in detector_cases():
        convs = detector_weights(sections, rng)
        cfg_file, weights_file, io_file = f"darknet_{name}.cfg", f"darknet_{name}.weights", f"darknet_{name}_io.safetensors"
        weights_path = os.path.join(OUT, weights_file)
        with open(os.path.join(OUT, cfg_file), "w") as f:
            f.write(text)
        write_darknet_weights(weights_path, convs, (0, 2, 5))

        net = sections[0][1]
        shape = (batch, int(net["channels"]), int(net["height"]), int(net["width"]))
        x = torch.from_numpy(rng.uniform(0.0, 1.0, shape).astype(np.float32))
        outs = detector_forward(sections, convs, x.double(), 1e-5)
        heads = [outs[i] for i in head_layers(sections)]
        n_params = sum(v.size for conv in convs for v in conv.values())
        print(f"darknet {name}: {len(sections) - 1} layers, {n_params} parameters, heads "
              + ", ".join(f"{list(h.shape)} max {h.abs().max():.2f}" for h in heads))
        # OpenCV uses batch-norm eps 1e-6: compare it with our forward at that eps.
        ours_cv = detector_forward(sections, convs, x.double(), 1e-6)
        cv_outs = opencv_layer_outputs(sections, weights_path, x, [c[1] for c in opencv_checks])
        for (what, _, layer), cv in zip(opencv_checks, cv_outs):
            err = max_rel(cv, ours_cv[layer].numpy())
            print(f"  {what} (layer {layer}): OpenCV vs ours (eps 1e-6): max rel err {err:.2e}")
            assert err < 1e-5, f"{name} {what}: OpenCV disagrees with the reference implementation ({err})"

        tensors = {"input": x}
        tensors.update({f"head_{k}": h.float().contiguous() for k, h in enumerate(heads)})
        save_file(tensors, os.path.join(OUT, io_file))
        manifest.append({
            "name": name,
            "cfg": cfg_file,
            "weights": weights_file,
            "io": io_file,
            "layers": len(sections) - 1,
            "yolo_layers": head_layers(sections),
            "head_shapes": [list(h.shape) for h in heads],
            "classes": DETECTOR_CLASSES,
            "opencv_checked": [f"{what} (layer {layer})" for what, _, layer in opencv_checks],
            "opencv_cannot_check": opencv_gap,
        })
    return manifest


def main():
    os.makedirs(OUT, exist_ok=True)
    reduced = {}
    timm_fixtures(reduced)
    write_json("timm_reduced.json", reduced)
    write_json("timm_full_keys.json", timm_full_keys(), one_line_values=True)
    write_json("darknet.json", darknet_fixtures())
    write_json("darknet_detectors.json", detector_fixtures())
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures: {total / 1e6:.2f} MB in {OUT}")


def write_json(name, value, one_line_values=False):
    """`one_line_values`: a {section: {key: value}} map written one key per line."""
    with open(os.path.join(OUT, name), "w") as f:
        if one_line_values:
            sections = []
            for section, entries in sorted(value.items()):
                lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(entries.items())]
                sections.append(f" {json.dumps(section)}: {{\n" + ",\n".join(lines) + "\n }")
            f.write("{\n" + ",\n".join(sections) + "\n}\n")
        else:
            json.dump(value, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
