#!/usr/bin/env python3
"""Draws the fixture pictures of docs/RESULTS.md (ablation, learning curve, models side by side).

Writes a small corpus in ESC-50's official layout (`ESC-50-master/audio/{fold}-{src}-{take}-{target}.wav`,
44.1 kHz mono 16-bit, and `meta/esc50.csv` with the real header): 10 classes x 5 folds x 4 takes
of 1 s noisy harmonic tones, noisy enough that the probes do not all score 1. Then runs the task
binary with the tiny random-weight fixture models (HuBERT and WavLM) and `report`:

    python3 scripts/fixture_pictures.py OUT_DIR [--bin target/release] [--epochs 30]

The pictures are of a fixture run: they show what the plots look like and how to read them, not how
good any model is. Build the binaries first (`cargo build --release -p esc50 -p report`).
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import wave

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "hubert-core", "tests", "fixtures")
CATEGORIES = ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow"]
ESC10 = {"dog", "rooster"}
RATE = 44_100


def tone(target: int, seed: int) -> np.ndarray:
    """A class's tone: its own fundamental and harmonic mix, a random phase and level, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    f0 = 180.0 * (1.18 ** target) * rng.uniform(0.93, 1.07)
    x = np.zeros_like(t)
    for h in range(1, 5):
        weight = ((target + h) % 4 + 1) / (h * 2.0)
        x += weight * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    x *= 0.25 / np.max(np.abs(x))
    x += rng.normal(0, rng.uniform(0.05, 0.35), size=t.shape)
    return np.clip(x, -1, 1)


def write_corpus(parent: str) -> str:
    root = os.path.join(parent, "ESC-50-master")
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    with open(os.path.join(root, "meta", "esc50.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for fold in range(1, 6):
            for target, category in enumerate(CATEGORIES):
                src = 100_000 + fold * 100 + target
                for t, take in enumerate("ABCD"):
                    name = f"{fold}-{src}-{take}-{target}.wav"
                    pcm = (tone(target, fold * 1000 + target * 10 + t) * 32767).astype("<i2")
                    with wave.open(os.path.join(root, "audio", name), "wb") as wav:
                        wav.setnchannels(1)
                        wav.setsampwidth(2)
                        wav.setframerate(RATE)
                        wav.writeframes(pcm.tobytes())
                    w.writerow([name, fold, target, category, category in ESC10, src, take])
    return root


def run(cmd, cwd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--epochs", default="30")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    data = write_corpus(out)
    esc50 = os.path.join(os.path.abspath(args.bin), "esc50")
    common = ["--data-dir", data]
    # Slugs by the naming rule: the folder's name, lowercased (`tiny-base`, `tiny-wavlm`).
    for fixture in ["tiny-base", "tiny-wavlm"]:
        model = os.path.join(FIXTURES, fixture)
        for variant in [[], ["--esc10"]]:
            run([esc50, "extract", *common, *variant, "--model", model, "--layers", "all",
                 "--pooling", "mean,std,max"], out)
            run([esc50, "train", *common, *variant, "--model", model, "--layer", "all",
                 "--epochs", args.epochs], out)
    run([esc50, "ablate", *common, "--model", os.path.join(FIXTURES, "tiny-base"),
         "--epochs", args.epochs, "--runs", "3", "--jobs", "2"], out)
    run([os.path.join(os.path.abspath(args.bin), "report"), "--results-dir", "results"], out)
    print(f"pictures under {out}/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
