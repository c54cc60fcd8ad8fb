#!/usr/bin/env python3
"""PyTorch/transformers side of the extraction benchmark (see scripts/bench_extract.sh).

Runs transformers' model of the checkpoint's family (AutoModel: HubertModel, Wav2Vec2Model,
WavLMModel, ...) on the same kind of clips, batch sizes and thread count as the Rust bench
(`cargo bench -p hubert-core --bench extract`), and prints one JSON line per (clip length,
batch size) plus the process's peak RSS. The timed region is the same as the Rust
side's: per-clip normalisation (Wav2Vec2FeatureExtractor semantics) + forward + mean pooling.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
from transformers import AutoModel


def clip(samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random(samples, dtype=np.float32) - 0.5) * 0.2).astype(np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/hubert-base-random")
    ap.add_argument("--seconds", default="1,5")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    # On a GPU, kernels run asynchronously: wait for them before reading the clock.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    # AutoModel picks the checkpoint's own family (HubertModel, Wav2Vec2Model, WavLMModel, ...)
    # from config.json, so both sides run the same architecture.
    model = AutoModel.from_pretrained(args.model, dtype=dtype).to(device).eval()
    sync()
    load_s = time.perf_counter() - t0
    for secs in [float(s) for s in args.seconds.split(",")]:
        n = int(round(secs * 16000))
        for batch in [int(b) for b in args.batch.split(",")]:
            clips = [clip(n, i) for i in range(batch)]

            def run():
                x = torch.from_numpy(np.stack([normalise(c) for c in clips])).to(device, dtype)
                with torch.inference_mode():
                    return model(x).last_hidden_state.float().mean(1).cpu()

            run()  # warm-up
            times = []
            for _ in range(args.reps):
                sync()
                t = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - t)
            times.sort()
            median = times[len(times) // 2]
            print(json.dumps({"impl": "pytorch", "device": args.device, "dtype": args.dtype, "clip_seconds": secs, "batch": batch,
                              "median_s": round(median, 4), "audio_s_per_s": round(secs * batch / median, 2)}),
                  flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    extra = {"peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device.type == "cuda" else {}
    print(json.dumps({"impl": "pytorch", "peak_rss_mib": round(peak), "load_s": round(load_s, 2),
                      "torch": torch.__version__, **extra}))


if __name__ == "__main__":
    main()
