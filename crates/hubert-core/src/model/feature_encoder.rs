//! The convolutional feature encoder (`feature_extractor`) and the feature projection
//! (`feature_projection`): raw samples to frames of the transformer's width. Shared by every
//! family; they differ only in the normalisation after each conv layer (GroupNorm after the
//! first: `feat_extract_norm = "group"`; LayerNorm after every one: `"layer"` and
//! data2vec-audio) and in whether the projection has a LayerNorm (DistilHuBERT has none).

use candle_core::{Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, GroupNorm, LayerNorm, Linear};
use rayon::prelude::*;
use tracing::{span, Level};

use super::{layer_norm, layer_norm_channels, linear, to_vec};
use crate::config::{Activation, FeatExtractNorm, HubertConfig};
use crate::cpu::gemm::Kernel;
use crate::cpu::winograd::{self, Act, Pre, WinogradConv};
use crate::cpu::{self, PackedConv};
use crate::weights::Weights;
use crate::Result;

/// Normalisation after a conv layer of the feature encoder.
#[derive(Debug)]
pub(crate) enum ConvNorm {
    /// `HubertGroupNormConvLayer`: GroupNorm with one group per channel.
    Group(GroupNorm),
    /// `HubertLayerNormConvLayer`: LayerNorm over channels.
    Layer(LayerNorm),
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L109-L178
/// One conv layer of the feature encoder (`feature_extractor.conv_layers.{i}`).
#[derive(Debug)]
pub(crate) struct ConvLayer {
    conv: Conv1d,
    norm: Option<ConvNorm>,
    activation: Activation,
    span: tracing::Span,
}

impl ConvLayer {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, i: usize) -> Result<Self> {
        let prefix = format!("feature_extractor.conv_layers.{i}");
        let in_dim = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
        let out_dim = cfg.conv_dim[i];
        let kernel = cfg.conv_kernel[i];
        let weight = w.get(&format!("{prefix}.conv.weight"), &[out_dim, in_dim, kernel])?;
        let bias = if cfg.conv_bias {
            Some(w.get_with_hint(
                &format!("{prefix}.conv.bias"),
                &[out_dim],
                " (config has conv_bias: true)",
            )?)
        } else {
            None
        };
        let conv = Conv1d::new(
            weight,
            bias,
            Conv1dConfig {
                stride: cfg.conv_stride[i],
                ..Default::default()
            },
        );
        let norm = match (cfg.feat_extract_norm, i) {
            (FeatExtractNorm::Group, 0) => {
                let prefix = format!("{prefix}.layer_norm");
                Some(ConvNorm::Group(GroupNorm::new(
                    w.get(&format!("{prefix}.weight"), &[out_dim])?,
                    w.get(&format!("{prefix}.bias"), &[out_dim])?,
                    out_dim,
                    out_dim,
                    1e-5, // nn.GroupNorm's default eps
                )?))
            }
            (FeatExtractNorm::Group, _) => None,
            (FeatExtractNorm::Layer, _) => Some(ConvNorm::Layer(layer_norm(
                w,
                &format!("{prefix}.layer_norm"),
                out_dim,
                1e-5, // nn.LayerNorm's default eps
            )?)),
        };
        Ok(Self {
            conv,
            norm,
            activation: Activation::from_name(&cfg.feat_extract_activation)?,
            span: span!(Level::TRACE, "conv-layer", i),
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = self.conv.forward(xs)?;
        let xs = match &self.norm {
            None => xs,
            Some(ConvNorm::Group(norm)) => norm.forward(&xs)?,
            Some(ConvNorm::Layer(norm)) => layer_norm_channels(norm, &xs)?,
        };
        Ok(self.activation.apply(&xs)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L181-L216
/// The convolutional feature encoder (`feature_extractor`): raw samples to frames.
#[derive(Debug)]
pub(crate) struct FeatureEncoder {
    conv_layers: Vec<ConvLayer>,
    /// Channels-last GEMM kernels for CPU fp32 with GELU (see [`crate::cpu`]).
    fast: Option<Vec<(FastConv, FastNorm)>>,
    /// Whether `fast` runs the bf16 kernel (Winograd inputs then are bf16).
    bf16: bool,
    span: tracing::Span,
}

/// A conv layer on the CPU path: strided GEMM, or Winograd for stride 2 kernel 3.
#[derive(Debug)]
pub(crate) enum FastConv {
    Plain(PackedConv),
    Winograd(WinogradConv),
}

impl FastConv {
    pub(crate) fn out_len(&self, t_in: usize) -> usize {
        match self {
            FastConv::Plain(conv) => conv.out_len(t_in),
            FastConv::Winograd(_) => WinogradConv::out_len(t_in),
        }
    }

    pub(crate) fn c_out(&self) -> usize {
        match self {
            FastConv::Plain(conv) => conv.c_out,
            FastConv::Winograd(conv) => conv.c_out,
        }
    }

    fn stride(&self) -> usize {
        match self {
            FastConv::Plain(conv) => conv.stride,
            FastConv::Winograd(_) => 2,
        }
    }

    fn kernel(&self) -> usize {
        match self {
            FastConv::Plain(conv) => conv.k,
            FastConv::Winograd(_) => 3,
        }
    }
}

/// A fast conv layer's output before its norm and activation: `[t, c]` frames, or
/// [`WinogradConv`]'s parts.
pub(crate) enum ConvOut {
    Plain(Vec<f32>),
    Winograd(Vec<f32>, Vec<f32>),
}

/// A fast conv layer's input: `[t, c]` frames, or transformed for [`WinogradConv`].
pub(crate) enum FastInput {
    Plain(Vec<f32>),
    Winograd(Vec<f32>),
    /// The same, as bf16 bits for the bf16 kernel.
    WinogradBf16(Vec<u16>),
}

/// The normalisation after a fast conv layer, with its affine parameters.
#[derive(Debug)]
pub(crate) enum FastNorm {
    None,
    Group(Vec<f32>, Vec<f32>),
    Layer(Vec<f32>, Vec<f32>),
}

impl FeatureEncoder {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        let conv_layers: Vec<ConvLayer> = (0..cfg.conv_dim.len())
            .map(|i| ConvLayer::load(w, cfg, i))
            .collect::<Result<_>>()?;
        let fast_kernel = kernel.filter(|_| {
            Activation::from_name(&cfg.feat_extract_activation).ok() == Some(Activation::Gelu)
        });
        let fast = if let Some(kernel) = fast_kernel {
            let mut layers = Vec::with_capacity(conv_layers.len());
            for (i, layer) in conv_layers.iter().enumerate() {
                let c_in = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
                let weight = to_vec(layer.conv.weight())?;
                let bias = layer.conv.bias().map(to_vec).transpose()?;
                let (k, stride) = (cfg.conv_kernel[i], cfg.conv_stride[i]);
                // The bf16 kernel reads the transformed input as bf16 k-pairs: even widths.
                let packed = if k == 3
                    && stride == 2
                    && (!kernel.is_bf16() || c_in.is_multiple_of(2))
                    && winograd::enabled()
                {
                    FastConv::Winograd(WinogradConv::new(
                        kernel,
                        &weight,
                        bias,
                        cfg.conv_dim[i],
                        c_in,
                    ))
                } else {
                    FastConv::Plain(PackedConv::new(
                        kernel,
                        &weight,
                        bias,
                        cfg.conv_dim[i],
                        c_in,
                        k,
                        stride,
                    ))
                };
                let norm = match &layer.norm {
                    None => FastNorm::None,
                    Some(ConvNorm::Group(_)) => {
                        let p = format!("feature_extractor.conv_layers.{i}.layer_norm");
                        FastNorm::Group(
                            to_vec(&w.get(&format!("{p}.weight"), &[cfg.conv_dim[i]])?)?,
                            to_vec(&w.get(&format!("{p}.bias"), &[cfg.conv_dim[i]])?)?,
                        )
                    }
                    Some(ConvNorm::Layer(ln)) => FastNorm::Layer(
                        to_vec(ln.weight())?,
                        to_vec(ln.bias().expect("loaded with a bias"))?,
                    ),
                };
                layers.push((packed, norm));
            }
            Some(layers)
        } else {
            None
        };
        Ok(Self {
            // The candle layers are only for devices and dtypes without the fast path: not
            // kept beside the packed copies (17 MB for hubert-base).
            conv_layers: if fast.is_some() {
                Vec::new()
            } else {
                conv_layers
            },
            fast,
            bf16: kernel.is_some_and(Kernel::is_bf16),
            span: span!(Level::TRACE, "feature-encoder"),
        })
    }

    /// `[B, samples]` -> `[B, T, C]` (channels last, as the projection wants it).
    pub(crate) fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        self.forward_with(input_values, TILE_FRAMES)
    }

    /// [`FeatureEncoder::forward`] computing at most `tile_frames` output frames at a time on
    /// the CPU path (tests compare tile sizes).
    ///
    /// A clip of more frames runs in tiles of samples that overlap by the encoder's receptive
    /// field less its stride (400 - 320 samples for the wav2vec2 stack): each tile starts at a
    /// multiple of the total stride, so every layer of the tile sees exactly the samples, and
    /// frame parity, it sees in the whole clip. The first layer's GroupNorm (one group per
    /// channel) needs statistics over the whole clip: a first pass runs that conv tile by
    /// tile and accumulates them, the second normalises with them. Memory: one tile's
    /// activations (the first layer's output is `512 x samples / 5` floats) plus the output.
    pub(crate) fn forward_with(&self, input_values: &Tensor, tile_frames: usize) -> Result<Tensor> {
        let _enter = self.span.enter();
        if let Some(layers) = &self.fast {
            let (b, n) = input_values.dims2()?;
            let (stride, field) = receptive_field(layers);
            let frames = layers.iter().fold(n, |t, (conv, _)| conv.out_len(t));
            let c = layers.last().map_or(0, |(conv, _)| conv.c_out());
            let tile = tile_frames.max(1);
            let mut outputs = Vec::with_capacity(b);
            for row in 0..b {
                let samples = input_values.get(row)?.to_vec1::<f32>()?;
                let x = if frames <= tile {
                    self.run_fast(layers, samples, None)
                } else {
                    let group = self.group_norm_pass(layers, &samples, tile * stride)?;
                    let mut out = Vec::with_capacity(frames * c);
                    let mut f0 = 0;
                    while f0 < frames {
                        let f1 = (f0 + tile).min(frames);
                        let span = &samples[f0 * stride..(f1 - 1) * stride + field];
                        out.extend(self.run_fast(layers, span.to_vec(), group.as_ref()));
                        f0 = f1;
                    }
                    out
                };
                debug_assert_eq!(x.len(), frames * c);
                outputs.push(Tensor::from_vec(x, (frames, c), input_values.device())?);
            }
            return Ok(Tensor::stack(&outputs, 0)?);
        }
        let mut xs = input_values.unsqueeze(1)?;
        for layer in &self.conv_layers {
            xs = layer.forward(&xs)?;
        }
        Ok(xs.transpose(1, 2)?)
    }

    /// The first pass of a tiled clip: when the first layer has a GroupNorm, its conv over
    /// `samples` in tiles of about `tile_samples`, reduced to the norm's per-channel
    /// `(scale, shift)`.
    fn group_norm_pass(
        &self,
        layers: &[(FastConv, FastNorm)],
        samples: &[f32],
        tile_samples: usize,
    ) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some((conv, FastNorm::Group(weight, bias))) = layers.first() else {
            return Ok(None);
        };
        let _span = span!(Level::TRACE, "group-norm-statistics").entered();
        let (stride, k, c) = (conv.stride(), conv.kernel(), conv.c_out());
        let frames = conv.out_len(samples.len());
        let tile = (tile_samples / stride).max(1);
        let mut moments = Moments::new(c);
        let mut f0 = 0;
        while f0 < frames {
            let f1 = (f0 + tile).min(frames);
            let span = &samples[f0 * stride..(f1 - 1) * stride + k];
            let out = match conv {
                FastConv::Plain(conv) => conv.forward(span, span.len()),
                FastConv::Winograd(_) => {
                    return Err(crate::Error::Config(
                        "a GroupNorm after a first conv of kernel 3, stride 2 is not supported"
                            .into(),
                    ))
                }
            };
            moments.add(&out);
            f0 = f1;
        }
        Ok(Some(moments.affine(weight, bias, 1e-5)))
    }

    /// The CPU layers over one clip (or one tile of it): `[t_out, c]` frames. `group`: the
    /// first layer's GroupNorm as `(scale, shift)` from the whole clip's statistics (`None`:
    /// computed from these samples, which then are the whole clip).
    fn run_fast(
        &self,
        layers: &[(FastConv, FastNorm)],
        samples: Vec<f32>,
        group: Option<&(Vec<f32>, Vec<f32>)>,
    ) -> Vec<f32> {
        let mut t = samples.len();
        let mut x = FastInput::Plain(samples);
        let bf16 = self.bf16;
        for (i, (conv, norm)) in layers.iter().enumerate() {
            let _layer = span!(Level::TRACE, "conv-layer", i).entered();
            let t_in = t;
            t = conv.out_len(t_in);
            let c = conv.c_out();
            let next_winograd = matches!(layers.get(i + 1), Some((FastConv::Winograd(_), _)));
            // The conv (its output before the norm and activation) ...
            // The input is dropped once the conv has run (a 5 s clip's first
            // Winograd input is 41 MB).
            let input = std::mem::replace(&mut x, FastInput::Plain(Vec::new()));
            let out = match (conv, &input) {
                (FastConv::Plain(conv), FastInput::Plain(x)) => {
                    ConvOut::Plain(conv.forward(x, t_in))
                }
                (FastConv::Winograd(conv), FastInput::Winograd(q)) => {
                    let (y, z) = conv.forward(q, t_in);
                    ConvOut::Winograd(y, z)
                }
                (FastConv::Winograd(conv), FastInput::WinogradBf16(q)) => {
                    let (y, z) = conv.forward(q, t_in);
                    ConvOut::Winograd(y, z)
                }
                _ => unreachable!("each layer gets the input form it takes"),
            };
            drop(input);
            // ... then its norm (GroupNorm's statistics want the frames themselves) ...
            let out = match (out, norm) {
                (ConvOut::Winograd(y, z), FastNorm::Group(..)) => {
                    ConvOut::Plain(winograd::combine(&y, &z, c))
                }
                (out, _) => out,
            };
            let affine = match (&out, norm, group) {
                (_, FastNorm::Group(..), Some((scale, shift))) if i == 0 => {
                    Some((scale.clone(), shift.clone()))
                }
                (ConvOut::Plain(p), FastNorm::Group(w, b), _) => {
                    Some(cpu::group_norm_affine(p, t, c, w, b, 1e-5))
                }
                _ => None,
            };
            let act = match (norm, &affine) {
                (FastNorm::Group(..), Some((scale, shift))) => Act::Affine { scale, shift },
                (FastNorm::Layer(w, b), _) => Act::LayerNorm {
                    weight: w,
                    bias: b,
                    eps: 1e-5,
                },
                _ => Act::Gelu,
            };
            // ... and activation, into the form the next layer takes.
            x = match out {
                ConvOut::Plain(mut p) if !next_winograd => {
                    winograd::activate_inplace(&mut p, act, c);
                    FastInput::Plain(p)
                }
                out => {
                    let pre = match &out {
                        ConvOut::Plain(p) => Pre::Plain(p),
                        ConvOut::Winograd(y, z) => Pre::Winograd { y, z },
                    };
                    if next_winograd && bf16 {
                        FastInput::WinogradBf16(winograd::to_winograd(pre, act, t, c))
                    } else if next_winograd {
                        FastInput::Winograd(winograd::to_winograd(pre, act, t, c))
                    } else {
                        FastInput::Plain(winograd::activate(pre, act, t, c))
                    }
                }
            };
        }
        let FastInput::Plain(x) = x else {
            unreachable!("the last layer's output is plain");
        };
        x
    }
}

/// Output frames per tile of [`FeatureEncoder::forward`] (10 s of audio: the first layer's
/// output for a tile is 64 MiB for a 512-channel encoder).
pub(crate) const TILE_FRAMES: usize = 500;

/// The conv stack's total stride and receptive field, in samples.
fn receptive_field(layers: &[(FastConv, FastNorm)]) -> (usize, usize) {
    let stride = layers.iter().map(|(conv, _)| conv.stride()).product();
    let field = layers
        .iter()
        .rev()
        .fold(1, |r, (conv, _)| (r - 1) * conv.stride() + conv.kernel());
    (stride, field)
}

/// Per-channel moments of `[t, c]` frames for a GroupNorm with one group per channel,
/// accumulated tile by tile: sums of `x - x0` and of its square in f64, `x0` the clip's first
/// frame (as [`cpu::group_norm_affine`] computes them for a whole clip at once).
struct Moments {
    first: Vec<f64>,
    sum: Vec<f64>,
    sq: Vec<f64>,
    frames: usize,
}

impl Moments {
    fn new(c: usize) -> Self {
        Self {
            first: Vec::new(),
            sum: vec![0.0; c],
            sq: vec![0.0; c],
            frames: 0,
        }
    }

    fn add(&mut self, x: &[f32]) {
        let c = self.sum.len();
        if self.first.is_empty() && x.len() >= c {
            self.first = x[..c].iter().map(|&v| v as f64).collect();
        }
        let first = &self.first;
        let (sum, sq) = x
            .par_chunks(c * 256)
            .map(|rows| {
                let mut sum = vec![0f64; c];
                let mut sq = vec![0f64; c];
                for row in rows.chunks_exact(c) {
                    for (((s, q), &v), &k) in sum.iter_mut().zip(sq.iter_mut()).zip(row).zip(first)
                    {
                        let d = v as f64 - k;
                        *s += d;
                        *q += d * d;
                    }
                }
                (sum, sq)
            })
            .reduce(
                || (vec![0f64; c], vec![0f64; c]),
                |(mut a, mut b), (x, y)| {
                    a.iter_mut().zip(&x).for_each(|(a, x)| *a += x);
                    b.iter_mut().zip(&y).for_each(|(b, y)| *b += y);
                    (a, b)
                },
            );
        self.sum.iter_mut().zip(&sum).for_each(|(a, x)| *a += x);
        self.sq.iter_mut().zip(&sq).for_each(|(a, x)| *a += x);
        self.frames += x.len() / c;
    }

    /// The norm as a per-channel `(scale, shift)`, like [`cpu::group_norm_affine`].
    fn affine(&self, weight: &[f32], bias: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
        let n = self.frames as f64;
        let mut scale = Vec::with_capacity(weight.len());
        let mut shift = Vec::with_capacity(weight.len());
        for ch in 0..weight.len() {
            let (s, q) = (self.sum[ch], self.sq[ch]);
            let mean = self.first[ch] + s / n;
            let var = (q / n - (s / n) * (s / n)).max(0.0);
            let sc = (weight[ch] as f64 / (var + eps).sqrt()) as f32;
            scale.push(sc);
            shift.push(bias[ch] - (mean as f32) * sc);
        }
        (scale, shift)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L219-L235
/// `feature_projection`: optional LayerNorm, then Linear to the transformer width.
#[derive(Debug)]
pub(crate) struct FeatureProjection {
    layer_norm: Option<LayerNorm>,
    projection: Linear,
    span: tracing::Span,
}

impl FeatureProjection {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig) -> Result<Self> {
        let conv_out = *cfg.conv_dim.last().expect("validated non-empty");
        let layer_norm = if cfg.feat_proj_layer_norm {
            Some(layer_norm(
                w,
                "feature_projection.layer_norm",
                conv_out,
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            layer_norm,
            projection: linear(
                w,
                "feature_projection.projection",
                conv_out,
                cfg.hidden_size,
            )?,
            span: span!(Level::TRACE, "feature-projection"),
        })
    }

    /// `[B, T, C]` -> `[B, T, D]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = match &self.layer_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.clone(),
        };
        Ok(self.projection.forward(&xs)?)
    }
}
