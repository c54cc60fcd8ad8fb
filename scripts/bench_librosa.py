#!/usr/bin/env python3
"""Reference side of the audio decode + resample benchmark (driven by scripts/bench_audio.sh).

Times ``librosa.load(path, sr=16000)`` (librosa's defaults: mono, soxr_hq) over every *.wav in
DIR, sequentially in this one process (one core: run it with OMP/MKL/OPENBLAS threads = 1), after
a warm-up pass over the first few files. Prints one JSON line:
{"tool": "librosa", "clips": N, "audio_seconds": S, "wall_seconds": T, "clips_per_s": ...,
 "audio_s_per_s": ..., "librosa": version, "soxr": version}
"""

import glob
import json
import os
import sys
import time

import librosa
import soundfile as sf


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.wav")))
    if not paths:
        print(f"no .wav files in {sys.argv[1]}", file=sys.stderr)
        return 1
    audio_seconds = sum(sf.info(p).duration for p in paths)
    for p in paths[:10]:  # warm-up: imports, soxr plan, page cache
        librosa.load(p, sr=16000)
    best = None
    passes = int(os.environ.get("PASSES", "5"))
    for _ in range(passes):  # best of PASSES passes, as the Rust side does
        start = time.perf_counter()
        total = 0
        for p in paths:
            y, _ = librosa.load(p, sr=16000)
            total += len(y)
        wall = time.perf_counter() - start
        best = wall if best is None else min(best, wall)
    try:
        import soxr

        soxr_version = soxr.__version__
    except ImportError:
        soxr_version = None
    print(
        json.dumps(
            {
                "tool": "librosa",
                "clips": len(paths),
                "audio_seconds": audio_seconds,
                "output_samples": total,
                "wall_seconds": best,
                "clips_per_s": len(paths) / best,
                "audio_s_per_s": audio_seconds / best,
                "librosa": librosa.__version__,
                "soxr": soxr_version,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
