//! The embedding loop every front end shares (`hubert embed`, each task's `extract`, the Python
//! binding): decoded 16 kHz clips in, per-clip pooled statistics (and optionally frames) out.
//!
//! [`Embedder::push`] takes clips in any order with the caller's index; clips are bucketed by
//! exact length ([`LengthBuckets`]) so a batch never holds padding and a batched result equals
//! the per-clip one; each batch runs one forward pass that yields every requested output of
//! every selected layer at once ([`HubertModel::forward_outputs`]). A batch holds at most
//! `batch_size` clips and `batch_size x max_batch_seconds` of audio (a longer clip runs alone).
//!
//! A clip shorter than the model's receptive field (400 samples, 25 ms, for the HuBERT family)
//! is zero-padded to it and marked [`Embedding::padded`], so callers can record it; the model
//! itself refuses shorter input.
//!
//! ```no_run
//! use hubert_core::{Embedder, EmbedOptions, Hubert, LayerSelection};
//! # fn main() -> hubert_core::Result<()> {
//! let hubert = Hubert::load("models/hubert-base", &hubert_core::Device::Cpu, hubert_core::DType::F32)?;
//! let mut embedder = Embedder::new(&hubert, EmbedOptions::new(LayerSelection::All))?;
//! let clips = vec![(0, vec![0.0f32; 16_000]), (1, vec![0.1f32; 8_000])];
//! let embeddings = embedder.embed_all(clips)?; // in input order
//! assert_eq!(embeddings[0].mean.as_ref().unwrap().len(), 13 * 768);
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;

use crate::bucket::{Batch, LengthBuckets};
use crate::model::{HubertModel, LayerSelection, Outputs};
use crate::{Error, Hubert, Result};

/// Sample rate of every clip the loop takes.
pub const SAMPLE_RATE: usize = 16_000;

/// What to embed and how to batch it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    /// Hidden states to keep.
    pub layers: LayerSelection,
    /// Statistics over frames (and frames) to return per layer.
    pub outputs: Outputs,
    /// Clips per forward pass (clips of equal length only).
    pub batch_size: usize,
    /// Audio per clip slot of a batch, in seconds: a batch holds at most
    /// `batch_size * max_batch_seconds` seconds (bounds attention memory on long clips).
    pub max_batch_seconds: usize,
}

impl EmbedOptions {
    /// Frame means of `layers`, batches of 8 clips and at most 8 x 30 s.
    pub fn new(layers: LayerSelection) -> Self {
        Self {
            layers,
            outputs: Outputs {
                mean: true,
                ..Outputs::default()
            },
            batch_size: 8,
            max_batch_seconds: 30,
        }
    }

    /// Also (or only) these outputs.
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Clips per forward pass.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
}

/// One embedded clip. Per-layer vectors are row-major `[L, D]` (`[L, T, D]` for frames), layers
/// in the order of [`EmbedOptions::layers`].
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The caller's index of the clip.
    pub index: usize,
    /// Frame mean per layer, `[L * D]`.
    pub mean: Option<Vec<f32>>,
    /// Population standard deviation over frames per layer, `[L * D]`.
    pub std: Option<Vec<f32>>,
    /// Maximum over frames per layer, `[L * D]`.
    pub max: Option<Vec<f32>>,
    /// Every frame of every layer, `[L * T * D]`.
    pub frames: Option<Vec<f32>>,
    /// Frames `T`.
    pub num_frames: usize,
    /// Samples the model saw (after zero-padding).
    pub num_samples: usize,
    /// The clip was shorter than the receptive field and was zero-padded to it.
    pub padded: bool,
}

/// The embedding loop over one loaded model; see the module docs.
#[derive(Debug)]
pub struct Embedder<'m> {
    hubert: &'m Hubert,
    options: EmbedOptions,
    buckets: LengthBuckets,
    padded: HashSet<usize>,
    min_samples: usize,
    num_layers: usize,
    samples_embedded: u64,
}

impl<'m> Embedder<'m> {
    /// A loop over `hubert`; the layer selection is checked against the model's configuration
    /// here, before any clip is decoded.
    pub fn new(hubert: &'m Hubert, options: EmbedOptions) -> Result<Self> {
        let config = hubert.config();
        options.layers.validate(config.num_hidden_layers)?;
        let o = options.outputs;
        if !(o.mean || o.std || o.max || o.frames) {
            return Err(Error::Config(
                "nothing to embed: ask for at least one output".into(),
            ));
        }
        let batch_size = options.batch_size.max(1);
        let max_batch_samples = batch_size
            .saturating_mul(options.max_batch_seconds.max(1))
            .saturating_mul(SAMPLE_RATE);
        Ok(Self {
            hubert,
            buckets: LengthBuckets::new(batch_size).with_max_batch_samples(max_batch_samples),
            padded: HashSet::new(),
            min_samples: config.min_samples(),
            num_layers: options.layers.len(config.num_hidden_layers),
            options,
            samples_embedded: 0,
        })
    }

    /// Stored layers `L`.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Feature width `D`.
    pub fn dim(&self) -> usize {
        self.hubert.config().hidden_size
    }

    /// The options.
    pub fn options(&self) -> &EmbedOptions {
        &self.options
    }

    /// Seconds of audio (after padding) embedded so far.
    pub fn seconds_embedded(&self) -> f64 {
        self.samples_embedded as f64 / SAMPLE_RATE as f64
    }

    /// Clips waiting for a batch.
    pub fn pending(&self) -> usize {
        self.buckets.pending()
    }

    /// Adds a 16 kHz mono clip; returns the clips whose batches ran (in no particular order).
    pub fn push(&mut self, index: usize, mut clip: Vec<f32>) -> Result<Vec<Embedding>> {
        if clip.len() < self.min_samples {
            clip.resize(self.min_samples, 0.0);
            self.padded.insert(index);
        }
        let mut done = Vec::new();
        for batch in self.buckets.push(index, clip) {
            done.extend(self.run(batch)?);
        }
        Ok(done)
    }

    /// Runs every waiting clip; returns them (in no particular order).
    pub fn flush(&mut self) -> Result<Vec<Embedding>> {
        let mut done = Vec::new();
        for batch in self.buckets.flush() {
            done.extend(self.run(batch)?);
        }
        Ok(done)
    }

    /// Embeds every clip of `clips` and returns the embeddings sorted by index.
    pub fn embed_all(
        &mut self,
        clips: impl IntoIterator<Item = (usize, Vec<f32>)>,
    ) -> Result<Vec<Embedding>> {
        let mut out = Vec::new();
        for (index, clip) in clips {
            out.extend(self.push(index, clip)?);
        }
        out.extend(self.flush()?);
        out.sort_by_key(|e| e.index);
        Ok(out)
    }

    fn run(&mut self, batch: Batch) -> Result<Vec<Embedding>> {
        let num_samples = batch.clip_len();
        let input = self.hubert.input_values(&batch.clip_refs())?;
        let model: &HubertModel = &self.hubert.model;
        let outputs = model.forward_outputs(&input, &self.options.layers, self.options.outputs)?;
        let num_frames = self.hubert.config().num_frames(num_samples);
        let row = |t: &Option<candle_core::Tensor>, r: usize| -> Result<Option<Vec<f32>>> {
            t.as_ref()
                .map(|t| Ok(t.get(r)?.flatten_all()?.to_vec1::<f32>()?))
                .transpose()
        };
        let mut done = Vec::with_capacity(batch.indices.len());
        for (r, &index) in batch.indices.iter().enumerate() {
            done.push(Embedding {
                index,
                mean: row(&outputs.mean, r)?,
                std: row(&outputs.std, r)?,
                max: row(&outputs.max, r)?,
                frames: row(&outputs.frames, r)?,
                num_frames,
                num_samples,
                padded: self.padded.remove(&index),
            });
        }
        self.samples_embedded += (num_samples * batch.indices.len()) as u64;
        Ok(done)
    }
}

/// One window of a clip embedded in chunks ([`chunk_windows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// First sample of the window in the clip.
    pub start: usize,
    /// Samples in the window.
    pub len: usize,
    /// The clip's frame index of the window's first frame.
    pub first_frame: usize,
    /// The window's own frames kept for the clip (window-local indices): of the frames two
    /// windows share, each goes to the window where it is furthest from an edge.
    pub keep: std::ops::Range<usize>,
}

/// Splits a clip of `samples` into windows of `chunk_frames` frames that overlap by
/// `overlap_frames` (`stride` samples per frame, `field` samples of receptive field: 320 and
/// 400 for the wav2vec2 conv stack). Window `k` starts at sample `k * (chunk - overlap) *
/// stride` and spans the receptive field of its frames, so its frame `i` is the clip's frame
/// `first_frame + i` seen with the window's context only. The kept ranges cover each of the
/// clip's frames exactly once, in order. A last window shorter than `field` joins the one
/// before it. `None` when the clip fits in one window (embed it whole).
///
/// # Panics
/// If `overlap_frames >= chunk_frames` or `chunk_frames == 0`.
pub fn chunk_windows(
    samples: usize,
    stride: usize,
    field: usize,
    chunk_frames: usize,
    overlap_frames: usize,
) -> Option<Vec<Window>> {
    assert!(chunk_frames > 0 && overlap_frames < chunk_frames);
    let frames_of = |len: usize| {
        if len < field {
            0
        } else {
            (len - field) / stride + 1
        }
    };
    // Saturating: `--chunk-seconds` comes from the user, and a window longer than any clip
    // simply means "no windows".
    let window_len = (chunk_frames - 1)
        .saturating_mul(stride)
        .saturating_add(field);
    if samples <= window_len {
        return None;
    }
    let step = (chunk_frames - overlap_frames) * stride;
    let mut windows: Vec<Window> = Vec::new();
    let mut start = 0;
    loop {
        let len = window_len.min(samples - start);
        if len < field {
            let last = windows.last_mut().expect("the first window is full");
            last.len = samples - last.start;
            break;
        }
        windows.push(Window {
            start,
            len,
            first_frame: start / stride,
            keep: 0..0,
        });
        if start + len >= samples {
            break;
        }
        start += step;
    }
    // Frames shared by windows k and k + 1 go to the one where they are furthest from an edge
    // (ties to the earlier window).
    let mut from = 0;
    for k in 0..windows.len() {
        let w = &windows[k];
        let frames = frames_of(w.len);
        let end = match windows.get(k + 1) {
            None => w.first_frame + frames,
            Some(next) => {
                let next_frames = frames_of(next.len);
                let mut end = next.first_frame;
                while end < w.first_frame + frames {
                    let here = (end - w.first_frame).min(w.first_frame + frames - 1 - end);
                    let there =
                        (end - next.first_frame).min(next.first_frame + next_frames - 1 - end);
                    if there > here {
                        break;
                    }
                    end += 1;
                }
                end
            }
        };
        windows[k].keep = from - w.first_frame..end - w.first_frame;
        from = end;
    }
    Some(windows)
}

impl Embedder<'_> {
    /// Embeds one clip as `windows` ([`chunk_windows`]) embedded separately, each window's kept
    /// frames stitched in order: the mean over all of them (and with `frames`, the stitched
    /// frames `[L, T, D]`). A deviation from the full-context result: each frame sees only its
    /// window's context. The embedder's options must ask for frames, and no clip may be
    /// waiting in it (keep one embedder for windows).
    pub fn embed_windows(
        &mut self,
        index: usize,
        clip: &[f32],
        windows: &[Window],
        frames: bool,
    ) -> Result<Embedding> {
        if !self.options.outputs.frames || self.pending() > 0 {
            return Err(Error::Config(
                "embedding in windows needs an embedder that keeps frames, with no clip waiting"
                    .into(),
            ));
        }
        let (layers, dim) = (self.num_layers, self.dim());
        let total: usize = windows.iter().map(|w| w.keep.len()).sum();
        let mut sum = vec![0f64; layers * dim];
        let mut stitched: Vec<Vec<f32>> = vec![Vec::new(); if frames { layers } else { 0 }];
        for w in windows {
            let mut done = self.push(usize::MAX, clip[w.start..w.start + w.len].to_vec())?;
            done.extend(self.flush()?);
            let e = done.pop().expect("the window was embedded");
            let f = e.frames.expect("frames asked for");
            for l in 0..layers {
                let rows = &f[(l * e.num_frames + w.keep.start) * dim..][..w.keep.len() * dim];
                for row in rows.chunks_exact(dim) {
                    for (s, &v) in sum[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                        *s += v as f64;
                    }
                }
                if frames {
                    stitched[l].extend_from_slice(rows);
                }
            }
        }
        Ok(Embedding {
            index,
            mean: Some(sum.iter().map(|&s| (s / total as f64) as f32).collect()),
            std: None,
            max: None,
            frames: frames.then(|| stitched.concat()),
            num_frames: total,
            num_samples: clip.len(),
            padded: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame of the clip is kept exactly once, in order, from a window that holds it,
    /// and from the one where it is furthest from an edge.
    #[test]
    fn windows_cover_every_frame_once_from_the_most_central_window() {
        let frames_of = |len: usize| if len < 400 { 0 } else { (len - 400) / 320 + 1 };
        for samples in [16_000, 48_000, 48_080, 100_001, 160_399] {
            for (chunk, overlap) in [(50, 0), (50, 10), (25, 24), (7, 3)] {
                let Some(windows) = chunk_windows(samples, 320, 400, chunk, overlap) else {
                    assert!(samples <= (chunk - 1) * 320 + 400);
                    continue;
                };
                let mut next = 0;
                for w in &windows {
                    let n = frames_of(w.len);
                    assert!(w.keep.end <= n && w.start + w.len <= samples);
                    assert_eq!(w.first_frame * 320, w.start);
                    for i in w.keep.clone() {
                        assert_eq!(w.first_frame + i, next, "{samples} {chunk}/{overlap}");
                        next += 1;
                        let dist = i.min(n - 1 - i);
                        for o in &windows {
                            let m = frames_of(o.len);
                            let g = w.first_frame + i;
                            if g >= o.first_frame && g < o.first_frame + m {
                                let j = g - o.first_frame;
                                assert!(j.min(m - 1 - j) <= dist, "frame {g}");
                            }
                        }
                    }
                }
                assert_eq!(next, frames_of(samples), "{samples} {chunk}/{overlap}");
            }
        }
        assert_eq!(chunk_windows(16_000, 320, 400, 50, 10), None);
        // A window too long to count in samples covers every clip: no windows, no overflow.
        assert_eq!(chunk_windows(16_000, 320, 400, usize::MAX / 2, 10), None);
    }
}
