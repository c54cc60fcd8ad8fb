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
  tiny-distilhubert/   DistilHuBERT-like: HuBERT without the feature-projection LayerNorm
                  (feat_proj_layer_norm: false), 2 layers, do_normalize: false
  tiny-wav2vec2/  wav2vec2 base in the Wav2Vec2ForPreTraining layout: `wav2vec2.` prefix,
                  masked_spec_embed, quantizer, project_q, project_hid; do_normalize: true
  tiny-wav2vec2-large/  wav2vec2 large-lv60 style: layer-norm conv encoder with conv bias,
                  stable layer norm, pytorch_model.bin with legacy weight-norm names
  tiny-data2vec/  data2vec-audio (Data2VecAudioModel layout): LayerNorm in every conv layer,
                  a stack of 2 positional convs of even kernel 4
  tiny-wavlm/     WavLM base-plus style (post-LN, group norm) in the
                  WavLMForSequenceClassification layout: `wavlm.` prefix, projector,
                  classifier, layer_weights; 16 buckets, max distance 20 (the clips reach
                  past it); preprocessor with do_normalize: false, return_attention_mask: true
  tiny-wavlm-large/  WavLM large style: layer-norm conv, stable layer norm, pytorch_model.bin
  tiny-bert/      a BertModel checkpoint (to be refused, naming `bert`)
  audio/          16 kHz mono WAVs: PCM16 and float32, of several lengths (400 samples = one frame)
  expected.safetensors
                  for each model M (base, large, distilhubert, wav2vec2, wav2vec2large,
                  data2vec, wavlm, wavlmlarge) and clip c: `M.c.input_values` [n],
                  `M.c.hidden_states` [L+1, T, D], `M.c.last_hidden_state` [T, D]; and
                  `wavlm.buckets_320_800` (int64): WavLM's relative position buckets for
                  relative positions -3000..=3000 with wavlm-base's 320 buckets / 800 distance

Every LayerNorm/GroupNorm affine, bias and weight_g is perturbed away from its initial value so
an implementation that ignores any of them fails the parity tests.

`--full-size DIR [--arch hubert-base|wav2vec2-base|wavlm-base-plus]` also writes a random
full-size checkpoint of that architecture in the hub layout (for benchmarks and a full-size
parity check; ~360 MB, keep it out of git) with expected outputs for two clips in
DIR/expected.safetensors; `HUBERT_FULL_SIZE_DIR=DIR cargo test -p hubert-core --test parity
full_size` checks it (1e-3 max abs, 2e-5 relative L2 on every hidden state).

Usage: python3 scripts/make_fixtures.py [--skip-tiny] [--full-size DIR [--arch ARCH]]
"""
import argparse
import json
import os
import shutil

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertModel,
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMForSequenceClassification,
    WavLMModel,
)

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

# The other families, each in its hub layout: (directory, expected-key, config class, kwargs,
# wrapper class or None, attribute of the base model in the wrapper, weight format,
# do_normalize, extra preprocessor keys).
PRETRAIN = dict(
    codevector_dim=16, proj_codevector_dim=16, num_codevector_groups=2,
    num_codevectors_per_group=4, mask_time_prob=0.05,
)
FAMILIES = [
    ("tiny-distilhubert", "distilhubert", HubertConfig,
     dict(TINY_COMMON, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
          num_conv_pos_embeddings=16, feat_proj_layer_norm=False,
          architectures=["HubertModel"]),
     HubertModel, None, "safetensors", False, {}),
    ("tiny-wav2vec2", "wav2vec2", Wav2Vec2Config,
     dict(TINY_COMMON, **PRETRAIN, feat_extract_norm="group", do_stable_layer_norm=False,
          conv_bias=False, num_conv_pos_embeddings=16,
          architectures=["Wav2Vec2ForPreTraining"]),
     Wav2Vec2ForPreTraining, "wav2vec2", "safetensors", True, {}),
    ("tiny-wav2vec2-large", "wav2vec2large", Wav2Vec2Config,
     dict(TINY_COMMON, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
          num_conv_pos_embeddings=15, architectures=["Wav2Vec2Model"]),
     Wav2Vec2Model, None, "bin", True, {"return_attention_mask": True}),
    ("tiny-data2vec", "data2vec", Data2VecAudioConfig,
     dict(TINY_COMMON, conv_bias=False, num_conv_pos_embeddings=2, conv_pos_kernel_size=4,
          architectures=["Data2VecAudioModel"]),
     Data2VecAudioModel, None, "safetensors", True, {}),
    ("tiny-wavlm", "wavlm", WavLMConfig,
     dict(TINY_COMMON, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
          num_conv_pos_embeddings=16, num_buckets=16, max_bucket_distance=20,
          use_weighted_layer_sum=True, classifier_proj_size=8, num_labels=3,
          architectures=["WavLMForSequenceClassification"]),
     WavLMForSequenceClassification, "wavlm", "safetensors", False,
     {"return_attention_mask": True}),
    ("tiny-wavlm-large", "wavlmlarge", WavLMConfig,
     dict(TINY_COMMON, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
          num_conv_pos_embeddings=15, num_buckets=16, max_bucket_distance=20,
          architectures=["WavLMModel"]),
     WavLMModel, None, "bin", True, {}),
]

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
            elif "gru_rel_pos" in name or "rel_attn_embed" in name:
                # WavLM's position bias and its gate: large enough that ignoring them fails.
                p.add_(0.5 * noise)
            elif name.endswith("original0") or name.endswith("weight_g"):
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=gen))


def legacy_state_dict(model: torch.nn.Module, prefix: str = "") -> dict:
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[prefix + k] = v.contiguous().clone()
    return out


def write_model_dir(path, model, config, do_normalize, fmt, prefix="", drop_feat_proj_key=False,
                    extra_fe=None, keep_keys=False):
    os.makedirs(path, exist_ok=True)
    cfg = config.to_dict()
    if drop_feat_proj_key:
        cfg.pop("feat_proj_layer_norm", None)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    fe_kwargs = dict(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize,
        return_attention_mask=False,
    )
    fe_kwargs.update(extra_fe or {})
    fe = Wav2Vec2FeatureExtractor(**fe_kwargs)
    fe.save_pretrained(path)
    if keep_keys:
        # A whole task-head / pre-training model: its own key names, as the hub stores them.
        sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
        if fmt == "safetensors":
            save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        else:
            torch.save(legacy_state_dict(model), os.path.join(path, "pytorch_model.bin"))
    elif fmt == "safetensors":
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


def wavlm_buckets(num_buckets, max_distance, reach):
    """WavLM's relative position buckets for -reach..=reach, computed by transformers."""
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention
    attn = WavLMAttention(embed_dim=8, num_heads=2, num_buckets=num_buckets, max_distance=max_distance)
    rel = torch.arange(-reach, reach + 1, dtype=torch.long)
    return attn._relative_positions_bucket(rel).to(torch.int64).contiguous()


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
    for j, (dirname, key, cfg_cls, kwargs, model_cls, base_attr, fmt, do_norm, extra) in enumerate(FAMILIES):
        torch.manual_seed(300 + j)
        config = cfg_cls(**kwargs)
        model = model_cls(config).eval()
        perturb(model, torch.Generator().manual_seed(400 + j))
        base = getattr(model, base_attr) if base_attr else model
        path = os.path.join(FIXTURES, dirname)
        write_model_dir(path, model, config, do_norm, fmt, extra_fe=extra, keep_keys=True)
        fe = Wav2Vec2FeatureExtractor.from_pretrained(path)
        for k, v in expected_outputs(base, fe, paths).items():
            expected[f"{key}.{k}"] = v
    expected["wavlm.buckets_320_800"] = wavlm_buckets(320, 800, 3000)
    bert_dir = os.path.join(FIXTURES, "tiny-bert")
    os.makedirs(bert_dir, exist_ok=True)
    torch.manual_seed(9)
    bert_cfg = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=8, max_position_embeddings=8)
    bert = BertModel(bert_cfg).eval()
    bert_cfg.architectures = ["BertModel"]
    with open(os.path.join(bert_dir, "config.json"), "w") as f:
        json.dump(bert_cfg.to_dict(), f, indent=2, sort_keys=True)
    save_file({k: v.contiguous().clone() for k, v in bert.state_dict().items()},
              os.path.join(bert_dir, "model.safetensors"), metadata={"format": "pt"})
    save_file(expected, os.path.join(FIXTURES, "expected.safetensors"))
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIXTURES) for f in fs)
    print(f"wrote {FIXTURES} ({total / 1024:.0f} KiB)")


# --full-size architectures: transformers' defaults are each checkpoint's architecture.
# (config, model class, do_normalize as the hub's preprocessor_config.json has it)
FULL_SIZE = {
    "hubert-base": (HubertConfig, HubertModel, True),  # facebook/hubert-base-ls960
    "wav2vec2-base": (Wav2Vec2Config, Wav2Vec2Model, True),  # facebook/wav2vec2-base
    "wavlm-base-plus": (WavLMConfig, WavLMModel, False),  # microsoft/wavlm-base-plus
}


def full_size(out_dir, arch="hubert-base"):
    torch.manual_seed(0)
    cfg_cls, model_cls, do_normalize = FULL_SIZE[arch]
    config = cfg_cls()
    model = model_cls(config).eval()
    perturb(model, torch.Generator().manual_seed(1))
    write_model_dir(out_dir, model, config, do_normalize, "safetensors",
                    drop_feat_proj_key=(arch == "hubert-base"))
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
    ap.add_argument("--full-size", metavar="DIR", help="also write a random full-size model here")
    ap.add_argument("--arch", choices=sorted(FULL_SIZE), default="hubert-base",
                    help="the architecture of --full-size (default hubert-base)")
    ap.add_argument("--skip-tiny", action="store_true", help="do not rewrite the tiny fixtures")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not args.skip_tiny:
        tiny_fixtures()
    if args.full_size:
        full_size(args.full_size, args.arch)
