#!/usr/bin/env python3
"""Gathers the results of a GPU bundle run into RESULTS/results.json and RESULTS/results.md.

Reads criterion's estimates under RESULTS/criterion (the `gpu` bench, one run per runtime), the
PyTorch peer's RESULTS/pytorch.json, and the adapter lines of RESULTS/<runtime>.log. Every
time is the median of criterion's samples (PyTorch: the median of its iterations), in
milliseconds. Standard library only.

Usage: summarize.py RESULTS
"""

import json
import os
import sys
import tempfile

# Our measurement -> the PyTorch peer's, for the side-by-side table.
PEERS = {
    "cifar10_training_step_width_0.25/packed": "training_step/width_0.25/batch_50",
    "cifar10_training_step_width_1/packed": "training_step/width_1/batch_50",
    "cifar10_inference_width_1/packed/1": "inference/width_1/batch_1",
    "cifar10_inference_width_1/packed/64": "inference/width_1/batch_64",
}


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def criterion_results(root):
    """Every benchmark under `root` (criterion's folder) as a dict, sorted by name."""
    found = []
    for folder, _, files in os.walk(root):
        if os.path.basename(folder) != "new" or "estimates.json" not in files:
            continue
        bench = read_json(os.path.join(folder, "benchmark.json"))
        estimates = read_json(os.path.join(folder, "estimates.json"))
        runtime, _, group = bench["group_id"].partition("_")
        name = "/".join(
            part
            for part in (group, bench.get("function_id"), bench.get("value_str"))
            if part
        )
        found.append(
            {
                "runtime": runtime,
                "name": name,
                "group": group,
                "function": bench.get("function_id"),
                "value": bench.get("value_str"),
                "median_ms": estimates["median"]["point_estimate"] / 1e6,
                "mean_ms": estimates["mean"]["point_estimate"] / 1e6,
                "elements": (bench.get("throughput") or {}).get("Elements"),
            }
        )
    return sorted(found, key=lambda r: (r["runtime"], r["group"], r["name"]))


def add_ratios(results):
    """Each result's speed against `burn_f32` of its group, runtime and value."""
    f32 = {
        (r["runtime"], r["group"], r["value"]): r["median_ms"]
        for r in results
        if r["function"] == "burn_f32"
    }
    for r in results:
        base = f32.get((r["runtime"], r["group"], r["value"]))
        r["speedup_vs_burn_f32"] = base / r["median_ms"] if base and r["median_ms"] else None
        if r["elements"]:
            r["binary_ops_per_s"] = 2 * r["elements"] / (r["median_ms"] / 1e3)


def adapter_lines(results_dir):
    """The adapter or device lines the bench printed, per runtime."""
    lines = {}
    for runtime in ("wgpu", "cuda"):
        path = os.path.join(results_dir, runtime + ".log")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("adapter:", "runtime:")):
                    lines[runtime] = line.strip()
                    break
    return lines


def peer_table(results, pytorch):
    """Rows (ours, PyTorch's, ratio) for the measurements both sides have."""
    theirs = {
        r["name"].split("/", 1)[1]: r["median_ms"] for r in pytorch.get("results", [])
    }
    rows = []
    for r in results:
        peer = PEERS.get(r["name"])
        if peer and peer in theirs:
            rows.append((r["runtime"], r["name"], r["median_ms"], peer, theirs[peer]))
    return rows


def markdown(summary):
    out = ["# burn-qnn GPU benchmarks", ""]
    for key in ("machine", "adapters"):
        if summary.get(key):
            out.append(f"**{key}**:")
            out.append("")
            values = summary[key]
            items = values.items() if isinstance(values, dict) else enumerate(values)
            out.extend(f"- {value}" for _, value in items)
            out.append("")
    out += [
        "Medians of criterion's samples, each iteration waiting for the device.",
        "",
        "| runtime | benchmark | median ms | × Burn f32 |",
        "|---|---|---:|---:|",
    ]
    for r in summary["benchmarks"]:
        ratio = r["speedup_vs_burn_f32"]
        ratio = f"{ratio:.2f}" if ratio else ""
        out.append(f"| {r['runtime']} | {r['name']} | {r['median_ms']:.3f} | {ratio} |")
    pytorch = summary.get("pytorch")
    if pytorch:
        out += [
            "",
            f"PyTorch {pytorch.get('torch_version')} float simulation with straight-through "
            f"estimators on {pytorch.get('device')} ({pytorch.get('device_name')}):",
            "",
            "| runtime | ours | ms | PyTorch | ms | PyTorch ms / ours |",
            "|---|---|---:|---|---:|---:|",
        ]
        for runtime, ours, ms, peer, peer_ms in summary["versus_pytorch"]:
            out.append(
                f"| {runtime} | {ours} | {ms:.3f} | {peer} | {peer_ms:.3f} | "
                f"{peer_ms / ms:.2f} |"
            )
    if summary["notes"]:
        out += ["", "Notes:", ""] + [f"- {n}" for n in summary["notes"]]
    return "\n".join(out) + "\n"


def write_atomic(path, text):
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: summarize.py RESULTS")
    results_dir = os.path.abspath(argv[1])
    results = criterion_results(os.path.join(results_dir, "criterion"))
    add_ratios(results)
    notes = []
    if not results:
        notes.append("no criterion results found (see the runtimes' logs)")
    machine_path = os.path.join(results_dir, "machine.txt")
    machine = []
    if os.path.exists(machine_path):
        with open(machine_path, encoding="utf-8", errors="replace") as f:
            machine = [line.strip() for line in f if line.strip()]
    pytorch_path = os.path.join(results_dir, "pytorch.json")
    pytorch = read_json(pytorch_path) if os.path.exists(pytorch_path) else None
    if pytorch is None:
        notes.append("no PyTorch results (see run.log)")
    run_log = os.path.join(results_dir, "run.log")
    if os.path.exists(run_log):
        with open(run_log, encoding="utf-8", errors="replace") as f:
            notes += [line.strip("= \n") for line in f if "skipped" in line or "exit" in line]
    summary = {
        "machine": machine,
        "adapters": adapter_lines(results_dir),
        "benchmarks": results,
        "pytorch": pytorch,
        "versus_pytorch": peer_table(results, pytorch) if pytorch else [],
        "notes": notes,
    }
    write_atomic(os.path.join(results_dir, "results.json"), json.dumps(summary, indent=2) + "\n")
    write_atomic(os.path.join(results_dir, "results.md"), markdown(summary))
    print(f"wrote {results_dir}/results.json and results.md ({len(results)} benchmarks)")


if __name__ == "__main__":
    main(sys.argv)
