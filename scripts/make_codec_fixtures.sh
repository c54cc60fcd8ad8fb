#!/usr/bin/env bash
# Writes the small WAV codec fixtures of crates/audio-io/tests/fixtures/codecs with sox: the same
# 0.5 s 16 kHz signal (a 300-3000 Hz sweep plus a 440 Hz tone) as IMA ADPCM (format tag 0x11, as
# sox and some Freesound uploads write it), Microsoft ADPCM (0x02), A-law (0x06) and mu-law
# (0x07), mono, plus a stereo IMA ADPCM file; and next to each, sox's own decode of it as raw
# little-endian float32 (`<file>.sox.f32`, interleaved channels), the reference the tests compare
# our decoder with. Requires sox (apt-get install sox). Re-running rewrites identical files for a
# given sox version; the version used is written to VERSION.
set -euo pipefail
out=$(cd "$(dirname "$0")/.." && pwd)/crates/audio-io/tests/fixtures/codecs
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sox -n -r 16000 -c 1 -b 16 -e signed-integer "$tmp/mono.wav" \
    synth 0.5 sine 300-3000 synth 0.5 sine mix 440 gain -6
sox -n -r 16000 -c 2 -b 16 -e signed-integer "$tmp/stereo.wav" \
    synth 0.5 sine 300-3000 sine 500 gain -6

encode() { # name source sox-encoding-args...
    local name=$1 src=$2
    shift 2
    sox "$src" "$@" "$out/$name"
    sox "$out/$name" -t raw -e floating-point -b 32 -L "$out/$name.sox.f32"
}
encode ima_adpcm_mono.wav "$tmp/mono.wav" -e ima-adpcm
encode ima_adpcm_stereo.wav "$tmp/stereo.wav" -e ima-adpcm
encode ms_adpcm_mono.wav "$tmp/mono.wav" -e ms-adpcm
encode alaw_mono.wav "$tmp/mono.wav" -e a-law
encode mulaw_mono.wav "$tmp/mono.wav" -e u-law
sox --version > "$out/VERSION"
ls -l "$out"
