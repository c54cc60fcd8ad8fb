//! `hubert_probe._native`: the Python extension module (PyO3) behind the `hubert_probe` package.
//!
//! It is a thin layer over the Rust crates, so Python gets exactly what the command line gets:
//!
//! - [`Model`] loads a checkpoint through [`hubert_core::ModelSource`] (a local directory or a hub
//!   id, with `HF_HOME`, `HF_ENDPOINT` and `HF_HUB_OFFLINE`, as `--model` does) and embeds numpy
//!   audio through [`hubert_core::Embedder`], the loop `hubert embed` and every task's `extract`
//!   run: clips bucketed by exact length, batches of equal-length clips, clips shorter than the
//!   receptive field zero-padded to it.
//! - Audio at another rate is resampled to 16 kHz with [`audio_io::resample_to_16k`], the
//!   resampler [`audio_io::load`] uses after decoding; int16 samples are scaled by 1/32768, as a
//!   PCM16 file decodes.
//! - [`load_audio`] is [`audio_io::load`]; [`read_features`] opens feature stores and
//!   `hubert embed` outputs (safetensors) into numpy arrays and Python objects.
//!
//! The GIL is released while audio is resampled, decoded or embedded and while models load.
//! Errors keep the Rust message (a bad file names the file) and map to the nearest Python
//! exception: `FileNotFoundError`, `OSError`, `ValueError`, `TypeError` or `RuntimeError`.

use std::num::NonZeroU32;
use std::path::PathBuf;

use hubert_core::{
    DeviceSpec, EmbedOptions, Embedder, Embedding, Hubert, LayerSelection, ModelSource, Outputs,
    Precision,
};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    Element, IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// The sample rate the models take, in Hz.
const SAMPLE_RATE: u32 = audio_io::TARGET_SAMPLE_RATE;

/// A hubert-core error as the nearest Python exception, with the same message.
fn core_err(e: hubert_core::Error) -> PyErr {
    use hubert_core::Error as E;
    let msg = e.to_string();
    match &e {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::ModelDir { .. } => PyFileNotFoundError::new_err(msg),
        E::Io { .. } | E::Hub { .. } => PyOSError::new_err(msg),
        E::Candle(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// An audio-io error as the nearest Python exception, with the same message (naming the file).
fn audio_err(e: audio_io::AudioError) -> PyErr {
    let msg = e.to_string();
    match &e {
        audio_io::AudioError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            PyFileNotFoundError::new_err(msg)
        }
        audio_io::AudioError::Io { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Which hidden states to return, as Python callers write it.
#[derive(FromPyObject)]
enum LayersArg {
    /// `"last"`, `"all"`, or comma-separated indices `"0,6,12"`.
    Name(String),
    /// One hidden-state index.
    Index(usize),
    /// Hidden-state indices.
    List(Vec<usize>),
}

impl LayersArg {
    fn selection(self) -> PyResult<LayerSelection> {
        match self {
            Self::Name(s) => s.parse().map_err(PyValueError::new_err),
            Self::Index(i) => Ok(LayerSelection::Indices(vec![i])),
            Self::List(v) => Ok(LayerSelection::Indices(v)),
        }
    }
}

/// The rows of a 1-D (one clip) or 2-D (`[N, samples]`) array of `T`, converted to f32.
fn array_rows<T: Element + Copy>(
    array: &Bound<'_, PyArrayDyn<T>>,
    to_f32: impl Fn(T) -> f32,
) -> PyResult<Vec<Vec<f32>>> {
    let readonly = array.try_readonly()?;
    let view = readonly.as_array();
    match view.ndim() {
        1 => Ok(vec![view.iter().map(|&x| to_f32(x)).collect()]),
        2 => Ok(view
            .outer_iter()
            .map(|row| row.iter().map(|&x| to_f32(x)).collect())
            .collect()),
        n => Err(PyValueError::new_err(format!(
            "audio array has {n} dimensions: expected 1 (one clip) or 2 ([N, samples]); \
             mix multi-channel audio to mono first"
        ))),
    }
}

/// The clips of one numpy array (float32, float64 or int16; int16 scaled by 1/32768).
fn rows_of_array(array: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<Vec<f32>>> {
    if let Ok(a) = array.cast::<PyArrayDyn<f32>>() {
        array_rows(a, |x| x)
    } else if let Ok(a) = array.cast::<PyArrayDyn<f64>>() {
        array_rows(a, |x| x as f32)
    } else if let Ok(a) = array.cast::<PyArrayDyn<i16>>() {
        array_rows(a, |x| f32::from(x) / 32768.0)
    } else {
        Err(PyTypeError::new_err(format!(
            "audio has dtype {}: expected float32, float64 or int16",
            array.dtype()
        )))
    }
}

/// The clips of `audio`: a 1-D array (one clip), a 2-D array (`[N, samples]`), or a list or
/// tuple of 1-D arrays (of any lengths). Returns the clips and whether the input was one clip.
fn clips_of(audio: &Bound<'_, PyAny>) -> PyResult<(Vec<Vec<f32>>, bool)> {
    let py = audio.py();
    let (clips, single) = if let Ok(array) = audio.cast::<PyUntypedArray>() {
        (rows_of_array(array)?, array.ndim() == 1)
    } else if audio.is_instance_of::<PyList>() || audio.is_instance_of::<PyTuple>() {
        let asarray = py.import("numpy")?.getattr("asarray")?;
        let mut clips = Vec::new();
        for (i, item) in audio.try_iter()?.enumerate() {
            let item = item?;
            let item = match item.cast::<PyUntypedArray>() {
                Ok(_) => item,
                Err(_) => asarray.call1((item,))?,
            };
            let array = item.cast::<PyUntypedArray>()?;
            if array.ndim() != 1 {
                return Err(PyValueError::new_err(format!(
                    "audio[{i}] has {} dimensions: a list holds 1-D clips",
                    array.ndim()
                )));
            }
            clips.extend(rows_of_array(array)?);
        }
        (clips, false)
    } else {
        return Err(PyTypeError::new_err(format!(
            "audio must be a numpy array (1-D clip or 2-D [N, samples]) or a list of 1-D \
             arrays, not {}",
            audio.get_type().name()?
        )));
    };
    if clips.is_empty() {
        return Err(PyValueError::new_err("no audio: the input holds no clip"));
    }
    for (i, clip) in clips.iter().enumerate() {
        if clip.is_empty() {
            return Err(PyValueError::new_err(format!(
                "clip {i} is empty (0 samples)"
            )));
        }
        if let Some(at) = clip.iter().position(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "clip {i}: sample {at} is {} (NaN or infinite samples are refused)",
                clip[at]
            )));
        }
    }
    Ok((clips, single))
}

/// Checks a caller's sample rate against the range audio-io decodes.
fn check_rate(sample_rate: u32) -> PyResult<NonZeroU32> {
    if !(audio_io::MIN_SAMPLE_RATE..=audio_io::MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(PyValueError::new_err(format!(
            "sample_rate {sample_rate} Hz is outside the supported {} to {} Hz",
            audio_io::MIN_SAMPLE_RATE,
            audio_io::MAX_SAMPLE_RATE
        )));
    }
    Ok(NonZeroU32::new(sample_rate).expect("checked above"))
}

/// A numpy array of `shape` from row-major data.
fn ndarray<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| PyRuntimeError::new_err(format!("internal shape error: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// A loaded checkpoint in the hub layout (any architecture hubert-core loads). Create one with
/// `Model.from_pretrained`.
#[pyclass(module = "hubert_probe", name = "Model", frozen)]
struct Model {
    hubert: Hubert,
    precision: Precision,
    device: DeviceSpec,
}

impl Model {
    /// Resamples `clips` from `rate` to 16 kHz and runs the embedding loop, without the GIL.
    fn run(
        &self,
        py: Python<'_>,
        clips: Vec<Vec<f32>>,
        rate: NonZeroU32,
        layers: LayerSelection,
        frames: bool,
        batch_size: usize,
    ) -> PyResult<(Vec<Embedding>, usize)> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be at least 1"));
        }
        let options = EmbedOptions::new(layers)
            .with_batch_size(batch_size)
            .with_outputs(Outputs {
                mean: true,
                frames,
                ..Outputs::default()
            });
        let hubert = &self.hubert;
        py.detach(move || {
            let mut embedder = Embedder::new(hubert, options)?;
            let num_layers = embedder.num_layers();
            let clips = clips.into_iter().map(|clip| {
                if rate.get() == SAMPLE_RATE {
                    clip
                } else {
                    audio_io::resample_to_16k(&clip, rate)
                }
            });
            Ok((embedder.embed_all(clips.enumerate())?, num_layers))
        })
        .map_err(core_err)
    }

    /// The centre of frame `t` in milliseconds: the frame covers samples
    /// `[t * hop, t * hop + receptive_field)` at 16 kHz.
    fn frame_centre_ms(&self, t: usize) -> f64 {
        let cfg = self.hubert.config();
        let hop: usize = cfg.conv_stride.iter().product();
        let centre = t as f64 * hop as f64 + cfg.min_samples() as f64 / 2.0;
        centre * 1000.0 / f64::from(SAMPLE_RATE)
    }
}

#[pymethods]
impl Model {
    /// Loads a model from a local directory (config.json + model.safetensors or
    /// pytorch_model.bin) or a hub id (`owner/name[@revision]`; HF_HOME, HF_ENDPOINT and
    /// HF_HUB_OFFLINE are respected), in `dtype` (float32, float16, bfloat16 and their short
    /// names) on `device` (cpu, cuda, cuda:N).
    #[staticmethod]
    #[pyo3(signature = (id_or_dir, dtype = "float32", device = "cpu"))]
    fn from_pretrained(
        py: Python<'_>,
        id_or_dir: &str,
        dtype: &str,
        device: &str,
    ) -> PyResult<Self> {
        let precision: Precision = dtype.parse().map_err(core_err)?;
        let device: DeviceSpec = device.parse().map_err(core_err)?;
        device.check_supported().map_err(core_err)?;
        let hubert = py
            .detach(|| ModelSource::resolve(id_or_dir)?.load(device, precision))
            .map_err(core_err)?;
        Ok(Self {
            hubert,
            precision,
            device,
        })
    }

    /// Frame means of the selected hidden states, `[N, L, D]` float32, one row per clip in input
    /// order.
    #[pyo3(signature = (audio, sample_rate, layers = LayersArg::Name("last".into()), batch_size = 8))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        audio: &Bound<'py, PyAny>,
        sample_rate: u32,
        layers: LayersArg,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let rate = check_rate(sample_rate)?;
        let layers = layers.selection()?;
        let (clips, _) = clips_of(audio)?;
        let (done, num_layers) = self.run(py, clips, rate, layers, false, batch_size)?;
        let dim = self.hubert.config().hidden_size;
        let mut pooled = Vec::with_capacity(done.len() * num_layers * dim);
        for e in &done {
            pooled.extend_from_slice(e.mean.as_deref().expect("mean requested"));
        }
        ndarray(py, &[done.len(), num_layers, dim], pooled)
    }

    /// Every frame of the selected hidden states, `([L, T, D] float32, timestamps [T] float64 in
    /// ms at frame centres)` for a 1-D clip; a list of such pairs for a 2-D array or a list.
    #[pyo3(signature = (audio, sample_rate, layers = LayersArg::Name("last".into()), batch_size = 8))]
    fn frames<'py>(
        &self,
        py: Python<'py>,
        audio: &Bound<'py, PyAny>,
        sample_rate: u32,
        layers: LayersArg,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rate = check_rate(sample_rate)?;
        let layers = layers.selection()?;
        let (clips, single) = clips_of(audio)?;
        let (done, num_layers) = self.run(py, clips, rate, layers, true, batch_size)?;
        let dim = self.hubert.config().hidden_size;
        let mut pairs = Vec::with_capacity(done.len());
        for e in done {
            let t = e.num_frames;
            let frames = ndarray(
                py,
                &[num_layers, t, dim],
                e.frames.expect("frames requested"),
            )?;
            let stamps: Vec<f64> = (0..t).map(|i| self.frame_centre_ms(i)).collect();
            let stamps = ndarray(py, &[t], stamps)?;
            pairs.push(PyTuple::new(py, [frames.into_any(), stamps.into_any()])?);
        }
        if single {
            Ok(pairs.remove(0).into_any())
        } else {
            Ok(PyList::new(py, pairs)?.into_any())
        }
    }

    /// Architecture, size and provenance: a dict (see the stubs for its keys).
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cfg = self.hubert.config();
        let files = &self.hubert.files;
        let hop: usize = cfg.conv_stride.iter().product();
        let d = PyDict::new(py);
        d.set_item("model", &files.id)?;
        d.set_item("revision", files.revision.as_deref())?;
        d.set_item("family", &cfg.model_type)?;
        d.set_item("num_layers", cfg.num_hidden_layers)?;
        d.set_item("num_hidden_states", cfg.num_hidden_layers + 1)?;
        d.set_item("hidden_size", cfg.hidden_size)?;
        d.set_item("intermediate_size", cfg.intermediate_size)?;
        d.set_item("num_attention_heads", cfg.num_attention_heads)?;
        d.set_item("conv_dim", cfg.conv_dim.clone())?;
        d.set_item("conv_kernel", cfg.conv_kernel.clone())?;
        d.set_item("conv_stride", cfg.conv_stride.clone())?;
        d.set_item("do_stable_layer_norm", cfg.do_stable_layer_norm)?;
        d.set_item(
            "feat_extract_norm",
            format!("{:?}", cfg.feat_extract_norm).to_lowercase(),
        )?;
        d.set_item("do_normalize", self.hubert.preprocessor.do_normalize)?;
        d.set_item("num_parameters", self.hubert.num_parameters())?;
        d.set_item("sample_rate", SAMPLE_RATE)?;
        d.set_item("frame_rate_hz", f64::from(SAMPLE_RATE) / hop as f64)?;
        d.set_item("min_samples", cfg.min_samples())?;
        d.set_item("dtype", self.precision.to_string())?;
        d.set_item("device", self.device.to_string())?;
        d.set_item("config", files.config.display().to_string())?;
        d.set_item("weights", files.weights.display().to_string())?;
        Ok(d)
    }

    /// Hidden states per clip of `layers="all"`: `num_layers + 1`.
    #[getter]
    fn num_hidden_states(&self) -> usize {
        self.hubert.config().num_hidden_layers + 1
    }

    /// Feature width `D`.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.hubert.config().hidden_size
    }

    /// Always 16000: the rate the model runs at (other rates are resampled to it).
    #[getter]
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn __repr__(&self) -> String {
        let cfg = self.hubert.config();
        format!(
            "Model({:?}, family={}, layers={}, hidden_size={}, dtype={}, device={})",
            self.hubert.files.id,
            cfg.model_type,
            cfg.num_hidden_layers,
            cfg.hidden_size,
            self.precision,
            self.device
        )
    }
}

/// Decodes an audio file (WAV, FLAC, MP3, OGG Vorbis; any rate and channel count) to 16 kHz
/// mono float32, exactly as `hubert embed` reads it: returns `(samples, 16000)`.
#[pyfunction]
fn load_audio<'py>(py: Python<'py>, path: PathBuf) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, u32)> {
    let samples = py.detach(|| audio_io::load(&path)).map_err(audio_err)?;
    let n = samples.len();
    Ok((ndarray(py, &[n], samples)?, SAMPLE_RATE))
}

/// A JSON value as the Python object `json.loads` would return.
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                PyInt::new(py, i).into_any()
            } else if let Some(u) = n.as_u64() {
                PyInt::new(py, u).into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Little-endian tensor bytes as a numpy array of `shape`.
fn tensor_array<'py, T: Element, const N: usize>(
    py: Python<'py>,
    shape: &[usize],
    bytes: &[u8],
    from_le: fn([u8; N]) -> T,
) -> PyResult<Bound<'py, PyAny>> {
    let data: Vec<T> = bytes
        .chunks_exact(N)
        .map(|b| from_le(b.try_into().expect("chunks_exact yields N bytes")))
        .collect();
    Ok(ndarray(py, shape, data)?.into_any())
}

/// Reads a feature store (`features/<task>_features_hubert*.safetensors`) or a `hubert embed`
/// output into a dict: every tensor as a numpy array under its name (`features` `[N, L, D]`
/// and `labels` `[N]`; or `pooled` `[N, L, D]` and `frames.<i>`), and `metadata`, whose JSON
/// values (lists and objects: `items`, `class_names`, `layer_indices`, `files`, ...) are
/// decoded and whose other values stay strings.
#[pyfunction]
fn read_features<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let shown = path.display().to_string();
    let bytes = py.detach(|| std::fs::read(&path)).map_err(|e| {
        let msg = format!("{shown}: cannot read file ({e})");
        if e.kind() == std::io::ErrorKind::NotFound {
            PyFileNotFoundError::new_err(msg)
        } else {
            PyOSError::new_err(msg)
        }
    })?;
    let bad = |msg: String| PyValueError::new_err(format!("{shown}: {msg}"));
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let is_store = metadata
        .get("format")
        .is_some_and(|f| f.starts_with("hubert-probe.features/"));
    let is_embed = tensors.names().contains(&"pooled");
    if !is_store && !is_embed {
        return Err(bad(
            "not a hubert-probe feature store (no `format` metadata) nor a `hubert embed` \
             output (no `pooled` tensor)"
                .into(),
        ));
    }
    let out = PyDict::new(py);
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = tensors
            .tensor(&name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let shape = view.shape();
        let data = view.data();
        use safetensors::Dtype;
        let array = match view.dtype() {
            Dtype::F32 => tensor_array(py, shape, data, f32::from_le_bytes)?,
            Dtype::F64 => tensor_array(py, shape, data, f64::from_le_bytes)?,
            Dtype::I64 => tensor_array(py, shape, data, i64::from_le_bytes)?,
            Dtype::I32 => tensor_array(py, shape, data, i32::from_le_bytes)?,
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {other:?}: expected F32, F64, I64 or I32"
                )))
            }
        };
        out.set_item(&name, array)?;
    }
    let meta = PyDict::new(py);
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        let value = &metadata[key];
        let structured = value.starts_with('[') || value.starts_with('{');
        if structured {
            let parsed: serde_json::Value = serde_json::from_str(value)
                .map_err(|e| bad(format!("metadata `{key}` is not valid JSON ({e})")))?;
            meta.set_item(key, json_to_py(py, &parsed)?)?;
        } else {
            meta.set_item(key, value)?;
        }
    }
    out.set_item("metadata", meta)?;
    Ok(out)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load_audio, m)?)?;
    m.add_function(wrap_pyfunction!(read_features, m)?)?;
    m.add("SAMPLE_RATE", SAMPLE_RATE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
