#!/usr/bin/env python3
"""PyTorch/transformers side of the extraction benchmark (see scripts/bench_extract.sh).

Runs transformers' HubertModel on the same kind of clips, batch sizes and thread count as the
Rust bench (`cargo bench -p hubert-core --bench extract`), and prints one JSON line per
(clip length, batch size) plus the process's peak RSS. The timed region is the same as the Rust
side's: per-clip normalisation (Wav2Vec2FeatureExtractor semantics) + forward + mean pooling.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
from transformers import HubertModel


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
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    t0 = time.perf_counter()
    model = HubertModel.from_pretrained(args.model, dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    for secs in [float(s) for s in args.seconds.split(",")]:
        n = int(round(secs * 16000))
        for batch in [int(b) for b in args.batch.split(",")]:
            clips = [clip(n, i) for i in range(batch)]

            def run():
                x = torch.from_numpy(np.stack([normalise(c) for c in clips])).to(dtype)
                with torch.inference_mode():
                    return model(x).last_hidden_state.mean(1).float()

            run()  # warm-up
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            times.sort()
            median = times[len(times) // 2]
            print(json.dumps({"impl": "pytorch", "dtype": args.dtype, "clip_seconds": secs, "batch": batch,
                              "median_s": round(median, 4), "audio_s_per_s": round(secs * batch / median, 2)}),
                  flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "pytorch", "peak_rss_mib": round(peak), "load_s": round(load_s, 2),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
