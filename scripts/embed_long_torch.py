#!/usr/bin/env python3
"""transformers' side of scripts/bench_long.sh: one long WAV through `AutoModel` with sdpa
attention, whole or in the windows of `hubert embed --chunk-seconds S --chunk-overlap O`.

    python3 scripts/embed_long_torch.py --model DIR --wav F.wav [--chunk-seconds S
        --chunk-overlap O] [--threads 2] -o OUT.npy

Whole: the checkpoint's feature extractor (do_normalize as its preprocessor_config.json says)
on the whole clip, one forward, mean of last_hidden_state over frames. Chunked: the same
windows as hubert-core's `chunk_windows` (ported below), each normalised and embedded alone,
each frame taken from the window where it is furthest from an edge, mean over the stitched
frames. Saves the pooled [D] vector as .npy and prints one JSON line (wall seconds, frames).
"""
import argparse
import json
import time

import numpy as np
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModel

STRIDE, FIELD = 320, 400


def frames_of(n):
    return 0 if n < FIELD else (n - FIELD) // STRIDE + 1


def chunk_windows(samples, chunk, overlap):
    """hubert_core::embed::chunk_windows: [(start, len, first_frame, keep_start, keep_end)]."""
    window_len = (chunk - 1) * STRIDE + FIELD
    if samples <= window_len:
        return None
    step = (chunk - overlap) * STRIDE
    wins, start = [], 0
    while True:
        length = min(window_len, samples - start)
        if length < FIELD:
            wins[-1][1] = samples - wins[-1][0]
            break
        wins.append([start, length, start // STRIDE])
        if start + length >= samples:
            break
        start += step
    out, frm = [], 0
    for k, (s, n, f0) in enumerate(wins):
        fr = frames_of(n)
        if k + 1 == len(wins):
            end = f0 + fr
        else:
            ns, nn, nf0 = wins[k + 1]
            nfr = frames_of(nn)
            end = nf0
            while end < f0 + fr:
                here = min(end - f0, f0 + fr - 1 - end)
                there = min(end - nf0, nf0 + nfr - 1 - end)
                if there > here:
                    break
                end += 1
        out.append((s, n, f0, frm - f0, end - f0))
        frm = end
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--chunk-seconds", type=float)
    ap.add_argument("--chunk-overlap", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fe = AutoFeatureExtractor.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, attn_implementation="sdpa").eval()
    x, sr = sf.read(args.wav, dtype="float32")
    assert sr == 16000 and x.ndim == 1, "a 16 kHz mono WAV"
    started = time.perf_counter()

    def forward(clip):
        v = fe(clip, sampling_rate=16000, return_tensors="pt").input_values
        return model(v).last_hidden_state[0]

    with torch.inference_mode():
        plan = None
        if args.chunk_seconds:
            chunk = int(args.chunk_seconds * 16000 / STRIDE)
            overlap = round(args.chunk_overlap * 16000 / STRIDE)
            plan = chunk_windows(len(x), chunk, overlap)
        if plan is None:
            h = forward(x)
            total, pooled = h.shape[0], h.double().mean(0)
        else:
            acc, total = torch.zeros(model.config.hidden_size, dtype=torch.float64), 0
            for s, n, _, k0, k1 in plan:
                h = forward(x[s : s + n])[k0:k1]
                acc += h.double().sum(0)
                total += h.shape[0]
            pooled = acc / total
    wall = time.perf_counter() - started
    np.save(args.output, pooled.float().numpy())
    print(json.dumps({"impl": "transformers-sdpa", "wall_s": wall, "frames": total,
                      "windows": len(plan) if plan else 1}))


if __name__ == "__main__":
    main()
