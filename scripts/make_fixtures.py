#!/usr/bin/env python3
"""Parity fixtures for hubert-core, generated with transformers' HubertModel (never by hand).

Writes, under crates/hubert-core/tests/fixtures/:
  tiny-base/      config.json (without `feat_proj_layer_norm`, like the hub's hubert-base-ls960),
                  preprocessor_config.json (do_normalize: true), model.safetensors with
                  `parametrizations.weight.original0/1` weight-norm names
  tiny-base-bin/  same model as pytorch_model.bin with legacy `weight_g`/`weight_v` names, keys
                  under a `hubert.` prefix plus an `lm_head` (a HubertForCTC-style checkpoint)
  tiny-large/     layer-norm conv encoder, conv bias, pre-LN transformer (do_stable_layer_norm),
                  odd positional kernel, do_normalize: false; model.safetensors
  tiny-large-bin/ same model as pytorch_model.bin, legacy names, no prefix
  audio/          16 kHz mono WAVs: PCM16 and float32, of several lengths (400 samples = one frame)
  expected.safetensors
                  for each model M in {base, large} and clip c: `M.c.input_values` [n],
                  `M.c.hidden_states` [L+1, T, D], `M.c.last_hidden_state` [T, D]

Every LayerNorm/GroupNorm affine, bias and weight_g is perturbed away from its initial value so
an implementation that ignores any of them fails the parity tests.

`--full-size DIR` also writes a random full-size hubert-base checkpoint in the hub layout (for
benchmarks and a full-size parity check; ~360 MB, keep it out of git) with expected outputs
for two clips in DIR/expected.safetensors.

Usage: python3 scripts/make_fixtures.py [--full-size models/hubert-base-random]
"""
import argparse
import json
import os
import shutil

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "hubert-core", "tests", "fixtures")

TINY_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embedding_groups=4,
)

CONFIGS = {
    "base": dict(
        TINY_COMMON,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        conv_bias=False,
        num_conv_pos_embeddings=16,  # even: the same-pad layer drops the last frame
    ),
    "large": dict(
        TINY_COMMON,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_conv_pos_embeddings=15,  # odd: nothing dropped
    ),
}
DO_NORMALIZE = {"base": True, "large": False}

# (name, samples, subtype): lengths cover the one-frame minimum, odd sizes and a full second.
CLIPS = [
    ("min400_pcm16", 400, "PCM_16"),
    ("odd1234_float", 1234, "FLOAT"),
    ("half8000_pcm16", 8000, "PCM_16"),
    ("one16000_float", 16000, "FLOAT"),
    ("one16000_pcm16", 16000, "PCM_16"),
]


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every norm affine, bias and weight-norm magnitude away from its init value."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and (name.endswith(".weight") or name.endswith(".bias")):
                p.add_(0.2 * noise)
            elif name.endswith(".bias"):
                p.add_(0.1 * noise)
            elif name.endswith("original0") or name.endswith("weight_g"):
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=gen))


def legacy_state_dict(model: torch.nn.Module, prefix: str = "") -> dict:
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[prefix + k] = v.contiguous().clone()
    return out


def write_model_dir(path, model, config, do_normalize, fmt, prefix="", drop_feat_proj_key=False):
    os.makedirs(path, exist_ok=True)
    cfg = config.to_dict()
    if drop_feat_proj_key:
        cfg.pop("feat_proj_layer_norm", None)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    fe = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize,
        return_attention_mask=False,
    )
    fe.save_pretrained(path)
    if fmt == "safetensors":
        sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
        assert any("parametrizations.weight.original0" in k for k in sd), "expected new weight-norm names"
        save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        sd = legacy_state_dict(model, prefix)
        if prefix:
            gen = torch.Generator().manual_seed(7)
            sd["lm_head.weight"] = torch.randn(8, config.hidden_size, generator=gen)
            sd["lm_head.bias"] = torch.zeros(8)
        torch.save(sd, os.path.join(path, "pytorch_model.bin"))


def write_clips(audio_dir):
    os.makedirs(audio_dir, exist_ok=True)
    rng = np.random.default_rng(1234)
    paths = {}
    for name, n, subtype in CLIPS:
        t = np.arange(n) / 16000.0
        x = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 1375.0 * t + 0.3)
        x = x + 0.05 * rng.standard_normal(n)
        x = np.clip(x, -0.99, 0.99).astype(np.float32)
        p = os.path.join(audio_dir, f"{name}.wav")
        sf.write(p, x, 16000, subtype=subtype)
        paths[name] = p
    return paths


def expected_outputs(model, fe, paths):
    out = {}
    for name, p in paths.items():
        wav, sr = sf.read(p, dtype="float32")
        assert sr == 16000
        inputs = fe(wav, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            o = model(inputs.input_values, output_hidden_states=True)
        out[f"{name}.input_values"] = inputs.input_values[0].contiguous()
        out[f"{name}.hidden_states"] = torch.stack([h[0] for h in o.hidden_states]).contiguous()
        out[f"{name}.last_hidden_state"] = o.last_hidden_state[0].contiguous()
    return out


def tiny_fixtures():
    if os.path.isdir(FIXTURES):
        shutil.rmtree(FIXTURES)
    paths = write_clips(os.path.join(FIXTURES, "audio"))
    expected = {}
    for i, (key, kwargs) in enumerate(CONFIGS.items()):
        torch.manual_seed(100 + i)
        config = HubertConfig(**kwargs)
        model = HubertModel(config).eval()
        perturb(model, torch.Generator().manual_seed(200 + i))
        write_model_dir(os.path.join(FIXTURES, f"tiny-{key}"), model, config, DO_NORMALIZE[key],
                        "safetensors", drop_feat_proj_key=(key == "base"))
        write_model_dir(os.path.join(FIXTURES, f"tiny-{key}-bin"), model, config, DO_NORMALIZE[key],
                        "bin", prefix="hubert." if key == "base" else "")
        fe = Wav2Vec2FeatureExtractor.from_pretrained(os.path.join(FIXTURES, f"tiny-{key}"))
        for k, v in expected_outputs(model, fe, paths).items():
            expected[f"{key}.{k}"] = v
    save_file(expected, os.path.join(FIXTURES, "expected.safetensors"))
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIXTURES) for f in fs)
    print(f"wrote {FIXTURES} ({total / 1024:.0f} KiB)")


def full_size(out_dir):
    torch.manual_seed(0)
    config = HubertConfig()  # facebook/hubert-base-ls960's architecture
    model = HubertModel(config).eval()
    perturb(model, torch.Generator().manual_seed(1))
    write_model_dir(out_dir, model, config, True, "safetensors", drop_feat_proj_key=True)
    audio = os.path.join(out_dir, "audio")
    os.makedirs(audio, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = {}
    for name, n, subtype in [("full_1s_pcm16", 16000, "PCM_16"), ("full_5s_float", 80000, "FLOAT")]:
        x = np.clip(0.1 * rng.standard_normal(n), -0.99, 0.99).astype(np.float32)
        p = os.path.join(audio, f"{name}.wav")
        sf.write(p, x, 16000, subtype=subtype)
        paths[name] = p
    fe = Wav2Vec2FeatureExtractor.from_pretrained(out_dir)
    save_file(expected_outputs(model, fe, paths), os.path.join(out_dir, "expected.safetensors"))
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", metavar="DIR", help="also write a random full-size hubert-base here")
    ap.add_argument("--skip-tiny", action="store_true", help="do not rewrite the tiny fixtures")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not args.skip_tiny:
        tiny_fixtures()
    if args.full_size:
        full_size(args.full_size)
