#!/usr/bin/env python3
"""The Python way of `hubert embed`, for the whole-process comparison in scripts/bench_embed.sh.

    python3 scripts/embed_torch.py --model DIR [--dtype f32|bf16] [--threads 2] -o OUT.npy FILES...

Per file: soundfile decode, channel mean, librosa resample to 16 kHz, Wav2Vec2FeatureExtractor,
transformers HubertModel forward, mean of last_hidden_state over frames; saves [N, 768] as .npy.
"""
import argparse

import librosa
import numpy as np
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, HubertModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    fe = AutoFeatureExtractor.from_pretrained(args.model)
    model = HubertModel.from_pretrained(args.model, dtype=dtype).eval()
    feats = []
    with torch.inference_mode():
        for path in args.files:
            x, sr = sf.read(path, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if sr != 16000:
                x = librosa.resample(x, orig_sr=sr, target_sr=16000)
            v = fe(x, sampling_rate=16000, return_tensors="pt").input_values.to(dtype)
            feats.append(model(v).last_hidden_state[0].float().mean(0).numpy())
    np.save(args.output, np.stack(feats))


if __name__ == "__main__":
    main()
