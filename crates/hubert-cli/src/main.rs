//! `hubert`: HuBERT features for any audio files.
//!
//! - `hubert embed --model M [--layers last|all|I,J] [--frames] --output out.safetensors a.wav ...`
//!   writes `pooled` `[N, L, D]` (mean over frames of each stored layer, input order), with
//!   `--frames` also `frames.<i>` `[L, T_i, D]`, and the file list, model and layers as metadata.
//!   `--max-seconds S` keeps the first S seconds of each file (said in the metadata);
//!   `--chunk-seconds S [--chunk-overlap O]` embeds longer files in windows, frames stitched.
//! - `hubert info --model M` prints the architecture and parameter count.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use artifacts::{write_safetensors, RawTensor};
use clap::{Args, Parser, Subcommand};
use hubert_core::{EmbedOptions, Embedder, Embedding, Hubert, LayerSelection, ModelArgs, Outputs};

/// HuBERT (and wav2vec2) features for audio files, exact against transformers.
#[derive(Parser)]
#[command(name = "hubert", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mean-pooled (and optionally per-frame) hidden states of audio files, to safetensors.
    Embed(EmbedArgs),
    /// Architecture, parameter count and files of a model.
    Info(InfoArgs),
}

/// Loads the model of `--model/--device/--dtype` (its config read once).
fn load(args: &ModelArgs) -> Result<Hubert> {
    args.check()?;
    let source = args
        .source()
        .with_context(|| format!("cannot find model {:?}", args.model))?;
    source
        .load(args.device, args.dtype)
        .with_context(|| format!("cannot load model {:?}", args.model))
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Hidden states to keep: `last` (last_hidden_state), `all` (0..=num_layers) or indices `0,6,12`.
    #[arg(long, default_value = "last")]
    layers: LayerSelection,
    /// Also store every clip's per-frame hidden states as `frames.<i>` `[L, T_i, D]`.
    #[arg(long)]
    frames: bool,
    /// Clips per batch (clips of equal length are batched together; results equal per-clip runs).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
    /// Skip files that cannot be decoded (listed on stderr and in the output metadata) instead
    /// of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Keep only the first S seconds of each file (recorded in the output metadata as
    /// `max_seconds` and the list `cropped`).
    #[arg(long, value_parser = positive_seconds)]
    max_seconds: Option<f64>,
    /// Embed files longer than S seconds in windows of S seconds, each window separately, its
    /// frames stitched into the file's (a deviation from the full-context result: frames see
    /// only their window's context); recorded in the metadata with the overlap.
    #[arg(long, value_parser = positive_seconds)]
    chunk_seconds: Option<f64>,
    /// Seconds that consecutive windows share (`--chunk-seconds`); each shared frame comes from
    /// the window where it is furthest from an edge.
    #[arg(long, default_value_t = 0.0, requires = "chunk_seconds", value_parser = non_negative_seconds)]
    chunk_overlap: f64,
    /// Read more input paths from this file, one per line.
    #[arg(long)]
    files_from: Option<PathBuf>,
    /// Output safetensors file.
    #[arg(long, short)]
    output: PathBuf,
    /// Audio files (WAV, FLAC, MP3, OGG; any rate and channel count).
    audio: Vec<PathBuf>,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Clips longer than this many seconds get a warning: attention's cost grows with the square of
/// the length (memory stays bounded: attention runs in tiles).
const LONG_CLIP_SECONDS: f64 = 600.0;

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

fn non_negative_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected seconds >= 0, got {s:?}")),
    }
}

/// The warning for a clip of `samples` at 16 kHz longer than [`LONG_CLIP_SECONDS`].
fn long_clip_warning(path: &std::path::Path, samples: usize) -> Option<String> {
    let seconds = samples as f64 / 16_000.0;
    if seconds <= LONG_CLIP_SECONDS {
        return None;
    }
    let frames = samples / 320;
    Some(format!(
        "warning: {} is {seconds:.0} s long ({frames} frames): attention over the whole clip \
         costs {:.0}x a 30 s clip's per second of audio (it grows with the square of the \
         length; memory stays bounded); --max-seconds S embeds only the first S seconds, \
         --chunk-seconds S in windows of S seconds",
        path.display(),
        seconds / 30.0
    ))
}

fn main() {
    hubert_core::tune_allocator();
    terminal::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed(args),
        Command::Info(args) => info(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn embed(args: EmbedArgs) -> Result<()> {
    let mut paths = args.audio.clone();
    if let Some(list) = &args.files_from {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("cannot read file list {}", list.display()))?;
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(PathBuf::from),
        );
    }
    if paths.is_empty() {
        bail!("no audio files given (pass paths or --files-from LIST)");
    }
    if args.output.extension().is_none_or(|e| e != "safetensors") {
        bail!(
            "--output {} should end in .safetensors",
            args.output.display()
        );
    }
    args.model.check()?;
    let source = args
        .model
        .source()
        .with_context(|| format!("cannot find model {:?}", args.model.model))?;
    let cfg = source.config.clone();
    // Checked against the model's configuration before its weights load or any file decodes.
    args.layers.validate(cfg.num_hidden_layers)?;
    let hubert = source
        .load(args.model.device, args.model.dtype)
        .with_context(|| format!("cannot load model {:?}", args.model.model))?;
    let hidden = cfg.hidden_size;
    eprintln!(
        "model {} ({} layers, {:.1}M parameters), {} files",
        hubert.files.id,
        cfg.num_hidden_layers,
        hubert.num_parameters() as f64 / 1e6,
        paths.len()
    );
    let options = EmbedOptions::new(args.layers.clone())
        .with_batch_size(args.batch_size as usize)
        .with_outputs(Outputs {
            mean: true,
            frames: args.frames,
            ..Outputs::default()
        });
    let mut embedder = Embedder::new(&hubert, options)?;
    let num_layers = embedder.num_layers();
    // Frames are `stride` samples apart and see `field` samples (320 and 400 at 16 kHz).
    let stride: usize = cfg.conv_stride.iter().product();
    let field = cfg.min_samples();
    let chunking = match args.chunk_seconds {
        Some(s) => {
            let chunk = (s * 16_000.0 / stride as f64).floor() as usize;
            let overlap = (args.chunk_overlap * 16_000.0 / stride as f64).round() as usize;
            if chunk == 0 || overlap >= chunk {
                bail!(
                    "--chunk-seconds {s} --chunk-overlap {}: a window needs at least one frame \
                     ({} s) and more frames than the overlap",
                    args.chunk_overlap,
                    stride as f64 / 16_000.0
                );
            }
            let windows = EmbedOptions::new(args.layers.clone())
                .with_batch_size(1)
                .with_outputs(Outputs {
                    frames: true,
                    ..Outputs::default()
                });
            Some((chunk, overlap, Embedder::new(&hubert, windows)?))
        }
        None => None,
    };
    let mut chunked: Vec<String> = Vec::new();
    let mut chunk_embedder = chunking;

    let progress = terminal::count_bar(paths.len() as u64, "embed", "clips");
    let started = Instant::now();
    let mut results: Vec<Option<Embedding>> = (0..paths.len()).map(|_| None).collect();
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    let place = |done: Vec<Embedding>, results: &mut Vec<Option<Embedding>>| {
        progress.inc(done.len() as u64);
        for e in done {
            let i = e.index;
            results[i] = Some(e);
        }
    };
    // At most max(2 x batch, 8) clips and 32 Mi samples (128 MiB of f32) decoded ahead: an
    // hour-long file (57.6 M samples) decodes alone instead of next to 7 others.
    let lookahead =
        audio_io::Lookahead::with_default_samples((2 * args.batch_size as usize).max(8));
    let max_samples = args
        .max_seconds
        .map(|s| (s * 16_000.0).round().max(1.0) as usize);
    let mut cropped: Vec<String> = Vec::new();
    for (index, decoded) in audio_io::load_many_bounded(paths.clone(), lookahead) {
        match decoded {
            Ok(mut clip) => {
                if let Some(max) = max_samples.filter(|&max| clip.len() > max) {
                    clip.truncate(max);
                    cropped.push(paths[index].display().to_string());
                }
                if let Some((chunk, overlap, windows_embedder)) = &mut chunk_embedder {
                    let plan = hubert_core::embed::chunk_windows(
                        clip.len(),
                        stride,
                        field,
                        *chunk,
                        *overlap,
                    );
                    if let Some(windows) = plan {
                        let e =
                            windows_embedder.embed_windows(index, &clip, &windows, args.frames)?;
                        chunked.push(paths[index].display().to_string());
                        place(vec![e], &mut results);
                        continue;
                    }
                } else if let Some(warning) = long_clip_warning(&paths[index], clip.len()) {
                    progress.suspend(|| eprintln!("{warning}"));
                }
                place(embedder.push(index, clip)?, &mut results)
            }
            Err(e) if args.skip_bad => {
                progress.suspend(|| eprintln!("skipped: {e}"));
                skipped.push((paths[index].clone(), e.to_string()));
                progress.inc(1);
            }
            Err(e) => {
                progress.abandon();
                return Err(anyhow::Error::from(e)
                    .context("stopping (pass --skip-bad to skip undecodable files)"));
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!(
            ", {:.1} audio-s/s",
            embedder.seconds_embedded() / secs
        ));
    }
    place(embedder.flush()?, &mut results);
    progress.finish_and_clear();
    let audio_seconds = embedder.seconds_embedded()
        + chunk_embedder
            .as_ref()
            .map_or(0.0, |(_, _, e)| e.seconds_embedded());

    let kept: Vec<(usize, Embedding)> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, r)))
        .collect();
    if kept.is_empty() {
        bail!("none of the {} files could be embedded", paths.len());
    }
    let mut pooled = Vec::with_capacity(kept.len() * num_layers * hidden);
    let mut tensors = Vec::new();
    for (out_index, (_, e)) in kept.iter().enumerate() {
        pooled.extend_from_slice(e.mean.as_deref().expect("mean requested"));
        if let Some(frames) = &e.frames {
            tensors.push((
                format!("frames.{out_index}"),
                RawTensor::f32(vec![num_layers, e.num_frames, hidden], frames),
            ));
        }
    }
    tensors.push((
        "pooled".to_string(),
        RawTensor::f32(vec![kept.len(), num_layers, hidden], &pooled),
    ));

    let files: Vec<String> = kept
        .iter()
        .map(|(i, _)| paths[*i].display().to_string())
        .collect();
    let padded: Vec<String> = kept
        .iter()
        .filter(|(_, e)| e.padded)
        .map(|(i, _)| paths[*i].display().to_string())
        .collect();
    for p in &padded {
        eprintln!(
            "note: {p} is shorter than the model's receptive field ({} samples at 16 kHz): zero-padded to it",
            cfg.min_samples()
        );
    }
    let skipped_json: Vec<serde_json::Value> = skipped
        .iter()
        .map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e}))
        .collect();
    let mut metadata = HashMap::from([
        ("files".to_string(), serde_json::to_string(&files)?),
        ("model".to_string(), hubert.files.id.clone()),
        (
            "revision".to_string(),
            hubert.files.revision.clone().unwrap_or_default(),
        ),
        ("layers".to_string(), args.layers.name()),
        (
            "layer_indices".to_string(),
            serde_json::to_string(&args.layers.stored_layers(cfg.num_hidden_layers))?,
        ),
        ("pooling".to_string(), "mean".to_string()),
        ("sample_rate".to_string(), "16000".to_string()),
        ("dtype".to_string(), args.model.dtype.to_string()),
        (
            "num_frames".to_string(),
            serde_json::to_string(&kept.iter().map(|(_, e)| e.num_frames).collect::<Vec<_>>())?,
        ),
        ("skipped".to_string(), serde_json::to_string(&skipped_json)?),
        ("padded".to_string(), serde_json::to_string(&padded)?),
    ]);
    metadata.insert(
        "frame_centre_seconds".to_string(),
        format!(
            "{} * i + {}",
            stride as f64 / 16_000.0,
            field as f64 / 2.0 / 16_000.0
        ),
    );
    if let Some(s) = args.chunk_seconds {
        metadata.insert("chunk_seconds".to_string(), s.to_string());
        metadata.insert("chunk_overlap".to_string(), args.chunk_overlap.to_string());
        metadata.insert("chunked".to_string(), serde_json::to_string(&chunked)?);
    }
    if let Some(max) = args.max_seconds {
        metadata.insert("max_seconds".to_string(), max.to_string());
        metadata.insert("cropped".to_string(), serde_json::to_string(&cropped)?);
    }
    write_safetensors(&args.output, &tensors, metadata)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({} clips, {} layers, {:.1} s of audio in {:.1} s: {:.1} audio-s/s){}",
        args.output.display(),
        kept.len(),
        num_layers,
        audio_seconds,
        secs,
        audio_seconds / secs.max(1e-9),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} bad files", skipped.len())
        }
    );
    Ok(())
}

fn info(args: InfoArgs) -> Result<()> {
    let hubert = load(&args.model)?;
    let info = hubert.info();
    if args.json {
        let mut summary = serde_json::to_value(&info)?;
        let cfg = hubert.config();
        summary["config"] = serde_json::json!(hubert.files.config);
        summary["weights"] = serde_json::json!(hubert.files.weights);
        summary["model_type"] = serde_json::json!(cfg.model_type);
        summary["num_conv_pos_embeddings"] = serde_json::json!(cfg.num_conv_pos_embeddings);
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("model            {}", info.model);
    if let Some(rev) = &info.revision {
        println!("revision         {rev}");
    }
    println!("weights          {}", hubert.files.weights.display());
    println!(
        "family           {}{}",
        info.family,
        if info.architectures.is_empty() {
            String::new()
        } else {
            format!(" ({})", info.architectures.join(", "))
        }
    );
    println!(
        "architecture     {}, {} layers x {} wide, {} heads, ffn {}",
        if info.do_stable_layer_norm {
            "pre-LN"
        } else {
            "post-LN"
        },
        info.num_hidden_layers,
        info.hidden_size,
        info.num_attention_heads,
        info.intermediate_size
    );
    println!(
        "conv encoder     {} layers, {:?} channels, {}-norm, kernels {:?}, strides {:?}",
        info.conv_dim.len(),
        info.conv_dim.last().copied().unwrap_or(0),
        info.feat_extract_norm,
        info.conv_kernel,
        info.conv_stride
    );
    println!(
        "positional conv  {} x kernel {}, {} groups",
        info.num_conv_pos_layers, info.conv_pos_kernel, info.num_conv_pos_embedding_groups
    );
    if let Some((buckets, distance)) = info.relative_position_buckets {
        println!("relative bias    {buckets} buckets, max distance {distance} (gated, per layer)");
    }
    println!(
        "frames           {} Hz, first frame needs {} samples",
        info.frame_rate_hz, info.min_samples
    );
    println!("input normalise  {}", info.do_normalize);
    println!(
        "parameters       {} ({:.1}M)",
        info.num_parameters,
        info.num_parameters as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clips_over_the_threshold_get_the_long_clip_warning() {
        let path = std::path::Path::new("talk.wav");
        assert_eq!(long_clip_warning(path, 600 * 16_000), None);
        let warning = long_clip_warning(path, 3600 * 16_000).unwrap();
        assert!(
            warning.contains("talk.wav is 3600 s long (180000 frames)"),
            "{warning}"
        );
        assert!(warning.contains("120x a 30 s clip's"), "{warning}");
        assert!(warning.contains("--max-seconds"), "{warning}");
    }

    #[test]
    fn max_seconds_must_be_positive() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        for bad in ["0", "-1", "nan", "inf", "ten"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative_seconds("0"), Ok(0.0));
        assert!(non_negative_seconds("-0.5").is_err());
    }
}
