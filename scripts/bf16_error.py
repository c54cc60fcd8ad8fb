#!/usr/bin/env python3
"""Error of reduced-precision extraction against transformers fp32, ours next to PyTorch's.

    python3 scripts/bf16_error.py [--model models/hubert-base-random] [--clips 4] [--seconds 5]
                                  [--hubert target/release/hubert] [--threads 2]

Writes `--clips` WAVs (16 kHz float, a chirp plus noise, deterministic), then computes the last
hidden state of each:
  - transformers (`AutoModel`: the checkpoint's own family) in fp32 (the reference) and with the
    model in bf16 (PyTorch's bf16);
  - `hubert embed --frames` with `--dtype f32` and `--dtype bf16` (our CPU bf16: bf16 operands in
    every matrix product, f32 accumulation, norms/softmax/GELU in f32).
Prints a Markdown table: relative L2 error (||x - ref|| / ||ref||) of the last hidden state's
frames and of its frame mean (the pooled feature), worst over clips, and the worst max-abs error.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModel


def clips(n, seconds, sr=16000):
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        t = np.arange(int(seconds * sr)) / sr
        f0, f1 = 100 * (i + 1), 2000 + 500 * i
        chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t))
        x = 0.3 * chirp + 0.05 * rng.standard_normal(t.size)
        out.append(x.astype(np.float32))
    return out


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", info
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=np.float32).reshape(info["shape"])
    return out


def errors(x, ref):
    x, ref = x.astype(np.float64), ref.astype(np.float64)
    rel = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    pooled = np.linalg.norm(x.mean(0) - ref.mean(0)) / np.linalg.norm(ref.mean(0))
    return rel, pooled, np.abs(x - ref).max()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/hubert-base-random")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--hubert", default="target/release/hubert")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    audio = clips(args.clips, args.seconds)
    tmp = tempfile.mkdtemp()
    paths = []
    for i, x in enumerate(audio):
        p = os.path.join(tmp, f"clip{i}.wav")
        sf.write(p, x, 16000, subtype="FLOAT")
        paths.append(p)

    fe = AutoFeatureExtractor.from_pretrained(args.model)
    inputs = [fe(x, sampling_rate=16000, return_tensors="pt").input_values for x in audio]
    results = {}
    with torch.inference_mode():
        for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:
            model = AutoModel.from_pretrained(args.model, dtype=dtype).eval()
            results[f"PyTorch {name}"] = [
                model(v.to(dtype)).last_hidden_state[0].float().numpy() for v in inputs
            ]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    for dtype in ["f32", "bf16"]:
        out = os.path.join(tmp, f"ours_{dtype}.safetensors")
        subprocess.run(
            [args.hubert, "embed", "--model", args.model, "--dtype", dtype, "--frames",
             "--batch-size", "1", "-o", out, *paths],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )
        t = load_safetensors(out)
        results[f"hubert-probe {dtype}"] = [t[f"frames.{i}"][-1] for i in range(len(paths))]

    ref = results.pop("PyTorch fp32")
    print(f"{args.clips} clips of {args.seconds:g} s, model {args.model}; reference: transformers fp32")
    print()
    print("| run | last hidden state rel. L2 (worst clip) | pooled rel. L2 (worst) | max abs |")
    print("|---|---|---|---|")
    for name, outs in results.items():
        errs = [errors(x, r) for x, r in zip(outs, ref)]
        rel = max(e[0] for e in errs)
        pooled = max(e[1] for e in errs)
        mx = max(e[2] for e in errs)
        print(f"| {name} | {rel:.2e} | {pooled:.2e} | {mx:.2e} |")


if __name__ == "__main__":
    sys.exit(main())
