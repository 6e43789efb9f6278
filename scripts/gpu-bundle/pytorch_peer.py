#!/usr/bin/env python3
"""PyTorch peer benchmark: the paper's CIFAR-10 binarized network as a float simulation.

What it measures
----------------
The CIFAR-10 network of Hubara, Courbariaux et al. ("Binarized Neural Networks" /
"Quantized Neural Networks"), built the way PyTorch users train BNNs today: every binary
layer is simulated in float, ``conv2d(sign(x), sign(W))`` / ``sign(x) @ sign(W).T``, with
straight-through estimators (hard tanh STE for activations, identity for the latent float
weights). Its shape and layer order match the Rust crate's ``NetConfig::cifar10()``:

    for i, c in enumerate([128, 128, 256, 256, 512, 512] * width):   # 3x3, same, no bias
        y = conv2d(x if i == 0 else sign_ste(x), sign(W))             # first layer: real input
        if i is odd: y = max_pool2d(y, 2, 2)                          # pooling before the norm
        x = BatchNorm2d(y)                                            # eps 1e-4, momentum 0.1
    x = flatten(x)                                                    # channel-major (NCHW)
    for units in [1024, 1024] * width + [10]:                         # no bias
        x = BatchNorm1d(sign_ste(x) @ sign(W).T)                      # the last norm is the output

with ``sign(v) = +1 if v >= 0 else -1`` and every count scaled as ``max(1, round(c * width))``
(rounding halves away from zero, as Rust's ``f64::round``).

Timed, each reported as median and mean milliseconds per iteration:

- ``training_step``: forward at batch 50, squared hinge loss (targets one-hot * 2 - 1,
  ``mean(max(0, 1 - t * y) ** 2)``), backward, ``torch.optim.Adam(lr=1e-3)`` step, then every
  binarized layer's latent weights clamped to [-1, 1] in place; widths 0.25 and 1;
- ``inference``: eval mode (batch norm on running statistics) under ``torch.inference_mode()``,
  full width, batch 1 and batch 64 (the float simulation binarizes the weights on every call).

PyTorch defaults are kept (no ``torch.compile``, no channels_last, cuDNN autotuning and TF32 as
the installed PyTorch sets them; both are reported). Each iteration is timed on the wall clock
between two device synchronizations, after a warm-up; each measurement runs for ``--seconds``
(at least a few iterations, at most ``--max-iters``).

How to run
----------
    python3 pytorch_peer.py --out results/pytorch_peer.json            # GPU if there is one
    python3 pytorch_peer.py --out /tmp/peer.json --device cpu --quick   # a check without GPU

Options: ``--out FILE`` (JSON results, required), ``--seconds S`` (time per measurement,
default 2), ``--max-iters N`` (cap on timed iterations per measurement), ``--quick`` (few
iterations, training at width 0.25 only), ``--device auto|cpu|cuda`` (default auto).
Needs only the Python standard library and PyTorch. The results are printed as a table and
written, atomically, as JSON to ``--out``. Exits non-zero with a message on any error.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as error:  # pragma: no cover - depends on the machine
    sys.exit(f"pytorch_peer: error: PyTorch is not importable ({error}); install torch first")

NAME_PREFIX = "pytorch_float_simulation"
CONV_CHANNELS = (128, 128, 256, 256, 512, 512)
HIDDEN_UNITS = (1024, 1024)
CLASSES = 10
IMAGE_SIZE = 32
IN_CHANNELS = 3
BN_EPSILON = 1e-4
BN_MOMENTUM = 0.1
LEARNING_RATE = 1e-3
TRAIN_BATCH = 50
TRAIN_WIDTHS = (0.25, 1.0)
QUICK_TRAIN_WIDTHS = (0.25,)
INFERENCE_WIDTH = 1.0
INFERENCE_BATCHES = (1, 64)


# --------------------------------------------------------------------------------------------
# Binarization with straight-through estimators
# --------------------------------------------------------------------------------------------


def sign(v):
    """+1 where ``v >= 0``, else -1 (so sign(0) = +1, unlike ``torch.sign``), in v's dtype."""
    return torch.where(v >= 0, 1.0, -1.0).to(v.dtype)


class SignActivation(torch.autograd.Function):
    """sign(x) forward; hard tanh straight-through estimator backward: grad * (|x| <= 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.abs() <= 1)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


class SignWeight(torch.autograd.Function):
    """sign(W) forward; the gradient passes straight through to the latent weight W."""

    @staticmethod
    def forward(ctx, w):
        return sign(w)

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_ste(x):
    return SignActivation.apply(x)


def sign_weight(w):
    return SignWeight.apply(w)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def scaled(count, width):
    """``max(1, round(count * width))`` with halves rounded away from zero, as in the crate."""
    return max(1, int(math.floor(count * width + 0.5)))


class BinaryConv2d(nn.Module):
    """3x3 same-padded convolution with binarized weights; binarized input unless ``first``."""

    def __init__(self, c_in, c_out, first):
        super().__init__()
        self.first = first
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3).uniform_(-1.0, 1.0))

    def forward(self, x):
        if not self.first:
            x = sign_ste(x)
        return F.conv2d(x, sign_weight(self.weight), padding=1)


class BinaryLinear(nn.Module):
    """Fully connected layer without bias, binarized input and weights."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-1.0, 1.0))

    def forward(self, x):
        return F.linear(sign_ste(x), sign_weight(self.weight))


class BinarizedCifarNet(nn.Module):
    """The paper's CIFAR-10 BNN: images [N, 3, 32, 32] in [-1, 1] to class scores [N, 10]."""

    def __init__(self, width):
        super().__init__()
        self.width = width
        channels = [scaled(c, width) for c in CONV_CHANNELS]
        hidden = [scaled(u, width) for u in HIDDEN_UNITS]
        self.convs = nn.ModuleList()
        self.conv_norms = nn.ModuleList()
        c_in = IN_CHANNELS
        for i, c_out in enumerate(channels):
            self.convs.append(BinaryConv2d(c_in, c_out, first=(i == 0)))
            self.conv_norms.append(batch_norm(nn.BatchNorm2d, c_out))
            c_in = c_out
        side = IMAGE_SIZE >> sum(1 for i in range(len(channels)) if pools_after(i))
        d_in = c_in * side * side
        self.dense = nn.ModuleList()
        self.dense_norms = nn.ModuleList()
        for d_out in hidden + [CLASSES]:
            self.dense.append(BinaryLinear(d_in, d_out))
            self.dense_norms.append(batch_norm(nn.BatchNorm1d, d_out))
            d_in = d_out

    def forward(self, images):
        x = images
        for i, (conv, norm) in enumerate(zip(self.convs, self.conv_norms)):
            y = conv(x)
            if pools_after(i):
                y = F.max_pool2d(y, 2, 2)
            x = norm(y)
        x = x.flatten(1)
        for layer, norm in zip(self.dense, self.dense_norms):
            x = norm(layer(x))
        return x

    def latent_weights(self):
        """The latent float weights of every binarized layer (clamped after each update)."""
        return [layer.weight for layer in list(self.convs) + list(self.dense)]


def pools_after(index):
    return index % 2 == 1


def batch_norm(kind, features):
    return kind(features, eps=BN_EPSILON, momentum=BN_MOMENTUM, affine=True)


def squared_hinge_loss(scores, labels):
    """Mean over batch and classes of max(0, 1 - t * y)^2 with t = one-hot * 2 - 1."""
    targets = F.one_hot(labels, scores.shape[1]).to(scores.dtype) * 2 - 1
    return torch.clamp(1 - targets * scores, min=0).pow(2).mean()


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Budget:
    """How long and how often one measurement runs."""

    def __init__(self, seconds, warmup_iters, min_iters, max_iters):
        self.seconds = seconds
        self.warmup_iters = warmup_iters
        self.min_iters = min_iters
        self.max_iters = max_iters


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(fn, device, budget):
    """Warms up, then times single iterations of ``fn``; returns (warm-up count, times in ms).

    The warm-up runs ``budget.warmup_iters`` iterations but stops early once half of
    ``budget.seconds`` is spent after its first iteration (which may pay for lazy
    initialization), so that slow steps on a CPU stay affordable.
    """
    fn()
    synchronize(device)
    warmup_done = 1
    start = time.perf_counter()
    while warmup_done < budget.warmup_iters:
        if time.perf_counter() - start >= budget.seconds / 2:
            break
        fn()
        synchronize(device)
        warmup_done += 1
    times_ms = []
    start = time.perf_counter()
    while len(times_ms) < budget.max_iters:
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times_ms.append((time.perf_counter() - t0) * 1e3)
        enough = len(times_ms) >= budget.min_iters
        if enough and time.perf_counter() - start >= budget.seconds:
            break
    return warmup_done, times_ms


def measure(name, fn, device, budget, extra):
    """Times ``fn`` and returns one result record."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup, times_ms = time_iterations(fn, device, budget)
    peak_mib = None
    if device.type == "cuda":
        peak_mib = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    result = {
        "name": name,
        "median_ms": round(statistics.median(times_ms), 4),
        "mean_ms": round(statistics.fmean(times_ms), 4),
        "min_ms": round(min(times_ms), 4),
        "max_ms": round(max(times_ms), 4),
        "iterations": len(times_ms),
        "warmup_iterations": warmup,
        "peak_memory_mib": peak_mib,
    }
    result.update(extra)
    return result


def random_batch(batch, device, generator):
    images = torch.rand(batch, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    return images.mul_(2).sub_(1).to(device), labels.to(device)


def make_training_step(model, optimizer, images, labels):
    latent = model.latent_weights()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = squared_hinge_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for w in latent:
                w.clamp_(-1.0, 1.0)
        return loss

    return step


def bench_training_step(width, device, budget, generator):
    torch.manual_seed(0)
    model = BinarizedCifarNet(width).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    images, labels = random_batch(TRAIN_BATCH, device, generator)
    step = make_training_step(model, optimizer, images, labels)
    check_loss(step())
    name = f"{NAME_PREFIX}/training_step/width_{width:g}/batch_{TRAIN_BATCH}"
    extra = {"kind": "training_step", "width": width, "batch": TRAIN_BATCH,
             "parameters": count_parameters(model)}
    return measure(name, step, device, budget, extra)


def bench_inference(batch, device, budget, generator):
    torch.manual_seed(0)
    model = BinarizedCifarNet(INFERENCE_WIDTH).to(device).eval()
    images, _ = random_batch(batch, device, generator)

    def forward():
        with torch.inference_mode():
            return model(images)

    check_scores(forward(), batch)
    name = f"{NAME_PREFIX}/inference/width_{INFERENCE_WIDTH:g}/batch_{batch}"
    extra = {"kind": "inference", "width": INFERENCE_WIDTH, "batch": batch,
             "parameters": count_parameters(model)}
    return measure(name, forward, device, budget, extra)


def check_loss(loss):
    if not torch.isfinite(loss).item():
        raise RuntimeError(f"the first training step gave a non-finite loss ({loss.item()})")


def check_scores(scores, batch):
    if tuple(scores.shape) != (batch, CLASSES):
        raise RuntimeError(f"inference gave scores of shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all().item():
        raise RuntimeError("inference gave non-finite scores")


# --------------------------------------------------------------------------------------------
# Environment, output, command line
# --------------------------------------------------------------------------------------------


def resolve_device(choice):
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but CUDA is not available to PyTorch")
    return torch.device(choice)


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def nvidia_driver():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def environment(device):
    on_cuda = device.type == "cuda"
    cudnn_version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if on_cuda else cpu_model(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn_version,
        "driver": nvidia_driver(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cpu_threads": torch.get_num_threads(),
    }


def write_json_atomically(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=".pytorch_peer.", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.chmod(temp_path, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def print_table(env, results):
    print(f"PyTorch {env['torch_version']} on {env['device']} ({env['device_name']}), "
          f"TF32 matmul {'on' if env['tf32_matmul'] else 'off'}")
    width = max(len(r["name"]) for r in results)
    print(f"{'benchmark':<{width}}  {'median ms':>10}  {'mean ms':>10}  {'iters':>6}")
    for r in results:
        print(f"{r['name']:<{width}}  {r['median_ms']:>10.3f}  {r['mean_ms']:>10.3f}  "
              f"{r['iterations']:>6}")


def positive_float(text):
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Time the paper's CIFAR-10 BNN as a PyTorch float simulation.")
    parser.add_argument("--out", required=True, help="JSON results file (written atomically)")
    parser.add_argument("--seconds", type=positive_float, default=2.0,
                        help="time budget of each measurement in seconds (default 2)")
    parser.add_argument("--max-iters", type=positive_int, default=None,
                        help="cap on timed iterations per measurement "
                             "(default 2000, 20 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="few iterations and training at width 0.25 only (for CPU checks)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="device to run on (default: cuda if available, else cpu)")
    return parser.parse_args(argv)


def make_budget(args):
    if args.quick:
        return Budget(args.seconds, warmup_iters=2, min_iters=3, max_iters=args.max_iters or 20)
    return Budget(args.seconds, warmup_iters=10, min_iters=5, max_iters=args.max_iters or 2000)


def run(args):
    out_folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_folder, exist_ok=True)
    device = resolve_device(args.device)
    env = environment(device)
    budget = make_budget(args)
    generator = torch.Generator().manual_seed(0)
    widths = QUICK_TRAIN_WIDTHS if args.quick else TRAIN_WIDTHS
    started = time.perf_counter()
    results = []
    for width in widths:
        results.append(bench_training_step(width, device, budget, generator))
    for batch in INFERENCE_BATCHES:
        results.append(bench_inference(batch, device, budget, generator))
    env["settings"] = {
        "seconds_per_measurement": args.seconds,
        "max_iterations": budget.max_iters,
        "quick": args.quick,
        "timing": "wall clock per iteration between device synchronizations, after warm-up",
        "optimizer": f"torch.optim.Adam(lr={LEARNING_RATE}), PyTorch defaults otherwise",
    }
    env["total_seconds"] = round(time.perf_counter() - started, 2)
    env["results"] = results
    write_json_atomically(args.out, env)
    print_table(env, results)
    print(f"wrote {args.out} ({env['total_seconds']} s of benchmarks)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("pytorch_peer: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # report any failure plainly, with a non-zero exit
        print(f"pytorch_peer: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
