//! A bounded reader for PyTorch's zip checkpoints (`pytorch_model.bin` from `torch.save`): the
//! state dict's pickle is interpreted by a small stack machine that knows only the opcodes and
//! the few globals a state dict uses, and every size it reads is checked before anything is
//! allocated from it.
//!
//! What it refuses, with errors naming the file and, where there is one, the tensor:
//! - memo-expansion bombs: memoised objects are shared, never copied, and every container
//!   carries the number of objects it would expand to; a pickle whose objects would expand past
//!   [`MAX_EXPANDED`] (or that runs more than [`MAX_OPS`] opcodes, or is larger than
//!   [`MAX_PICKLE_BYTES`]) is refused;
//! - shapes larger than their storage: a tensor's extent (offset, sizes and strides) must lie
//!   inside the storage its persistent id declares, the storage inside its zip entry, and the
//!   tensor may not have more elements than its storage (no stride-0 expansions);
//! - any global other than the state-dict ones (`collections.OrderedDict`,
//!   `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the typed storages):
//!   nothing from the file is ever executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The largest `data.pkl` read (a state dict's pickle is a few hundred KB even for xlarge).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// The most opcodes interpreted.
pub const MAX_OPS: usize = 10_000_000;
/// The most objects any value may expand to when its shared references are counted as copies.
pub const MAX_EXPANDED: u64 = 10_000_000;
/// The highest tensor rank accepted.
const MAX_RANK: usize = 8;

/// A dict's entries and its expanded size, shared as the memo shares it.
type SharedDict = Rc<RefCell<(Vec<(Value, Value)>, u64)>>;

/// A pickle value. Containers are shared (`Rc`) as the pickle memo shares them.
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool, float or byte string: values a state dict carries but this reader never uses.
    Scalar,
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>, u64),
    List(Rc<RefCell<(Vec<Value>, u64)>>),
    Dict(SharedDict),
    Global(Rc<str>),
    /// A storage from a persistent id: (dtype, zip key, number of elements).
    Storage(DType, Rc<str>, usize),
    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    Tensor(Rc<TensorRef>),
    Mark,
}

/// Where a tensor's values lie.
#[derive(Debug)]
struct TensorRef {
    dtype: DType,
    key: Rc<str>,
    storage_len: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl Value {
    /// Objects this value would expand to with every shared reference copied.
    fn expanded(&self) -> u64 {
        match self {
            Value::Tuple(_, n) => *n,
            Value::List(l) => l.borrow().1,
            Value::Dict(d) => d.borrow().1,
            _ => 1,
        }
    }
}

/// A state dict read from a PyTorch zip checkpoint: `(name, tensor)` in file order.
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let err = Error::checkpoint(path);
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| err(format!("not a PyTorch zip checkpoint ({e})")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i)?.ok().map(|n| n.to_string()))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| err("no `<archive>/data.pkl` in the zip".into()))?;
    let dir = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut pickle = Vec::new();
    {
        let entry = zip
            .by_name(&pkl_name)
            .map_err(|e| err(format!("{pkl_name}: {e}")))?;
        entry
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut pickle)
            .map_err(|e| err(format!("{pkl_name}: {e}")))?;
    }
    if pickle.len() as u64 > MAX_PICKLE_BYTES {
        return Err(err(format!(
            "{pkl_name} is larger than {MAX_PICKLE_BYTES} bytes"
        )));
    }
    let entries = parse_state_dict(&pickle).map_err(err)?;
    let mut storages: HashMap<Rc<str>, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let named = |msg: String| err(format!("tensor `{name}`: {msg}"));
        if !storages.contains_key(&t.key) {
            let entry_name = format!("{dir}data/{}", t.key);
            let entry = zip
                .by_name(&entry_name)
                .map_err(|e| named(format!("storage {entry_name}: {e}")))?;
            let declared = entry.size();
            let needed = (t.storage_len as u64).saturating_mul(t.dtype.size_in_bytes() as u64);
            // Checked before reading: the storage the pickle declares must fit in its entry,
            // and a stored entry cannot be larger than the file.
            if needed > declared {
                return Err(named(format!(
                    "storage {} declares {} elements ({needed} bytes) but holds {declared} bytes",
                    t.key, t.storage_len
                )));
            }
            if entry.compression() == zip::CompressionMethod::Stored && declared > file_len {
                return Err(named(format!(
                    "storage {} claims {declared} bytes, more than the file",
                    t.key
                )));
            }
            let mut bytes = Vec::new();
            entry
                .take(needed)
                .read_to_end(&mut bytes)
                .map_err(|e| named(format!("storage {}: {e}", t.key)))?;
            if (bytes.len() as u64) < needed {
                return Err(named(format!(
                    "storage {} is truncated ({} of {needed} bytes)",
                    t.key,
                    bytes.len()
                )));
            }
            storages.insert(t.key.clone(), bytes);
        }
        let bytes = &storages[&t.key];
        let tensor = materialise(&t, bytes).map_err(named)?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Copies a tensor's elements (any strides inside the storage) into a new CPU tensor.
fn materialise(t: &TensorRef, storage: &[u8]) -> std::result::Result<Tensor, String> {
    let es = t.dtype.size_in_bytes();
    let numel: usize = t.shape.iter().product();
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (&s, &st) in t.shape.iter().zip(&t.stride).rev() {
            if s > 1 && st != expect {
                ok = false;
            }
            expect *= s;
        }
        ok
    };
    if numel == 0 {
        return Tensor::zeros(t.shape.as_slice(), t.dtype, &Device::Cpu).map_err(|e| e.to_string());
    }
    let data: Vec<u8> = if contiguous {
        storage[t.offset * es..(t.offset + numel) * es].to_vec()
    } else {
        let mut data = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset
                + idx
                    .iter()
                    .zip(&t.stride)
                    .map(|(&i, &st)| i * st)
                    .sum::<usize>();
            data.extend_from_slice(&storage[at * es..(at + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        data
    };
    Tensor::from_raw_buffer(&data, t.dtype, &t.shape, &Device::Cpu).map_err(|e| e.to_string())
}

/// Checks a tensor's geometry against its storage (all arithmetic checked).
fn check_geometry(t: &TensorRef) -> std::result::Result<(), String> {
    if t.shape.len() > MAX_RANK || t.shape.len() != t.stride.len() {
        return Err(format!(
            "shape {:?} with strides {:?} is not a tensor this reader accepts",
            t.shape, t.stride
        ));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| format!("shape {:?} overflows", t.shape))?;
    if numel == 0 {
        return Ok(());
    }
    let extent = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&s, &st)| {
            (s - 1).checked_mul(st).and_then(|v| a.checked_add(v))
        })
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| format!("shape {:?} with strides {:?} overflows", t.shape, t.stride))?;
    if extent > t.storage_len || numel > t.storage_len {
        return Err(format!(
            "shape {:?} (strides {:?}, offset {}) is larger than its storage of {} elements",
            t.shape, t.stride, t.offset, t.storage_len
        ));
    }
    Ok(())
}

fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name.rsplit('.').next()? {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        _ => return None,
    })
}

const ALLOWED_GLOBALS: [&str; 3] = [
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
];

/// Runs the pickle and returns the state dict's tensors (geometry checked).
fn parse_state_dict(data: &[u8]) -> std::result::Result<Vec<(String, TensorRef)>, String> {
    let root = run(data)?;
    let Value::Dict(dict) = root else {
        return Err("the pickle is not a state dict (a dict of tensors)".into());
    };
    let dict = dict.borrow();
    let mut out = Vec::with_capacity(dict.0.len());
    for (k, v) in &dict.0 {
        let Value::Str(name) = k else {
            return Err("a state-dict key is not a string".into());
        };
        let Value::Tensor(t) = v else {
            return Err(format!("entry `{name}` is not a tensor"));
        };
        check_geometry(t).map_err(|m| format!("tensor `{name}`: {m}"))?;
        out.push((
            name.to_string(),
            TensorRef {
                dtype: t.dtype,
                key: t.key.clone(),
                storage_len: t.storage_len,
                offset: t.offset,
                shape: t.shape.clone(),
                stride: t.stride.clone(),
            },
        ));
    }
    Ok(out)
}

/// A cursor over the pickle bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("the pickle ends early")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn line(&mut self) -> std::result::Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line in the pickle")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> std::result::Result<Rc<str>, String> {
        let b = self.take(n)?;
        Ok(Rc::from(
            std::str::from_utf8(b).map_err(|_| "a string in the pickle is not UTF-8")?,
        ))
    }
}

fn sum_expanded<'a>(items: impl Iterator<Item = &'a Value>) -> u64 {
    items.fold(1u64, |a, v| a.saturating_add(v.expanded()))
}

fn check_expanded(n: u64) -> std::result::Result<(), String> {
    if n > MAX_EXPANDED {
        Err(format!(
            "the pickle's objects expand to more than {MAX_EXPANDED} values (a memo-expansion \
             bomb?)"
        ))
    } else {
        Ok(())
    }
}

fn as_usize(v: &Value, what: &str) -> std::result::Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative integer, got {other:?}"
        )),
    }
}

fn as_usizes(v: &Value, what: &str) -> std::result::Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items, _) if items.len() <= MAX_RANK => {
            items.iter().map(|i| as_usize(i, what)).collect()
        }
        other => Err(format!(
            "{what}: expected a short tuple of integers, got {other:?}"
        )),
    }
}

/// `callable(*args)` for the allowed globals.
fn reduce(callable: &Value, args: &Value) -> std::result::Result<Value, String> {
    let Value::Global(name) = callable else {
        return Err(format!("REDUCE on {callable:?}"));
    };
    let Value::Tuple(args, _) = args else {
        return Err(format!("{name}: arguments are not a tuple"));
    };
    match &**name {
        "collections.OrderedDict" => Ok(Value::Dict(Rc::new(RefCell::new((Vec::new(), 1))))),
        "torch._utils._rebuild_tensor_v2" => {
            let [storage, offset, size, stride, ..] = &args[..] else {
                return Err("_rebuild_tensor_v2: too few arguments".into());
            };
            let Value::Storage(dtype, key, storage_len) = storage else {
                return Err("_rebuild_tensor_v2: the first argument is not a storage".into());
            };
            Ok(Value::Tensor(Rc::new(TensorRef {
                dtype: *dtype,
                key: key.clone(),
                storage_len: *storage_len,
                offset: as_usize(offset, "storage offset")?,
                shape: as_usizes(size, "size")?,
                stride: as_usizes(stride, "stride")?,
            })))
        }
        "torch._utils._rebuild_parameter" => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter: the first argument is not a tensor".into()),
        },
        other => Err(format!("REDUCE on `{other}`")),
    }
}

/// Interprets the pickle; returns the value STOP leaves.
fn run(data: &[u8]) -> std::result::Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> std::result::Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("no MARK on the stack")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    for _ in 0..MAX_OPS {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.take(8)?; // FRAME
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(Value::Dict(Rc::new(RefCell::new((Vec::new(), 1))))),
            b']' => stack.push(Value::List(Rc::new(RefCell::new((Vec::new(), 1))))),
            b')' => stack.push(Value::Tuple(Rc::new(Vec::new()), 1)),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Scalar),
            0x89 => stack.push(Value::Scalar),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err("LONG1 wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                r.take(8)?;
                stack.push(Value::Scalar);
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                r.take(n)?;
                stack.push(Value::Scalar);
            }
            b'T' | b'B' => {
                let n = r.u32()? as usize;
                r.take(n)?;
                stack.push(Value::Scalar);
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, stack.last().ok_or("BINPUT on an empty stack")?.clone());
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(
                    k,
                    stack.last().ok_or("LONG_BINPUT on an empty stack")?.clone(),
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().ok_or("MEMOIZE on an empty stack")?.clone());
            }
            b'h' | b'j' => {
                let k = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo.get(&k).ok_or(format!("memo key {k} not set"))?.clone();
                stack.push(v);
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().ok_or("DUP on an empty stack")?.clone();
                stack.push(top);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(global(module, name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err("STACK_GLOBAL without two strings".into());
                };
                stack.push(global(&module, &name)?);
            }
            b't' | 0x85 | 0x86 | 0x87 => {
                let items = match op {
                    b't' => pop_mark(&mut stack)?,
                    _ => {
                        let n = (op - 0x84) as usize;
                        if stack.len() < n {
                            return Err("stack underflow".into());
                        }
                        stack.split_off(stack.len() - n)
                    }
                };
                let n = sum_expanded(items.iter());
                check_expanded(n)?;
                stack.push(Value::Tuple(Rc::new(items), n));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                let Some(Value::List(list)) = stack.last() else {
                    return Err("APPEND to something that is not a list".into());
                };
                let mut list = list.borrow_mut();
                list.1 = list.1.saturating_add(sum_expanded(items.iter()) - 1);
                check_expanded(list.1)?;
                list.0.extend(items);
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of values".into());
                }
                let Some(Value::Dict(dict)) = stack.last() else {
                    return Err("SETITEM on something that is not a dict".into());
                };
                let mut dict = dict.borrow_mut();
                dict.1 = dict.1.saturating_add(sum_expanded(items.iter()) - 1);
                check_expanded(dict.1)?;
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.0.push((k, v));
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(&callable, &args)?);
            }
            b'b' => {
                // BUILD: state set on an object (OrderedDict's `_metadata`): dropped.
                pop(&mut stack)?;
                if stack.is_empty() {
                    return Err("BUILD on an empty stack".into());
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_storage(&pid)?);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    r.pos - 1
                ))
            }
        }
    }
    Err(format!("the pickle runs more than {MAX_OPS} opcodes"))
}

fn global(module: &str, name: &str) -> std::result::Result<Value, String> {
    let full = format!("{module}.{name}");
    if ALLOWED_GLOBALS.contains(&full.as_str())
        || (module == "torch" && storage_dtype(name).is_some())
    {
        Ok(Value::Global(Rc::from(full)))
    } else {
        Err(format!(
            "the pickle refers to `{full}`, which a state dict does not contain"
        ))
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)` -> a storage reference.
fn persistent_storage(pid: &Value) -> std::result::Result<Value, String> {
    let Value::Tuple(items, _) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match &items[..] {
        [Value::Str(kind), Value::Global(ty), Value::Str(key), _, numel]
            if &**kind == "storage" =>
        {
            let dtype =
                storage_dtype(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
            if key.is_empty() || key.contains('/') || key.contains("..") {
                return Err(format!("storage key {key:?} is not a plain name"));
            }
            Ok(Value::Storage(
                dtype,
                key.clone(),
                as_usize(numel, "storage size")?,
            ))
        }
        _ => Err("persistent id is not a typed storage".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pickle `[[...[x]*n...]*n]` nested `depth` times through memo references: a few hundred
    /// bytes that a copying reader expands to n^depth objects. Lists (`]`, `l`), or with
    /// `tuples` the same of tuples (`)`, `t`).
    fn laughs(n: usize, depth: usize, tuples: bool) -> Vec<u8> {
        let (empty, close) = if tuples { (b')', b't') } else { (b']', b'l') };
        let mut p = vec![0x80, 2, empty, b'q', 0]; // memo 0 = [] or ()
        for level in 1..=depth {
            p.push(b'(');
            for _ in 0..n {
                p.extend([b'h', (level - 1) as u8]);
            }
            p.extend([close, b'q', level as u8]);
        }
        p.push(b'.');
        p
    }

    #[test]
    fn memo_bombs_are_refused() {
        // `l` (LIST) is not an opcode a state dict uses: the reader refuses it outright, and
        // with tuples instead the expansion count does.
        let err = run(&laughs(10, 9, false)).unwrap_err();
        assert!(err.contains("opcode"), "{err}");
        let p = laughs(10, 9, true);
        assert!(p.len() < 300);
        let err = run(&p).unwrap_err();
        assert!(err.contains("memo-expansion"), "{err}");
    }

    #[test]
    fn foreign_globals_are_refused() {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"os\nsystem\n");
        p.push(b'.');
        let err = run(&p).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn geometry_is_checked_against_the_storage() {
        let t = |shape: Vec<usize>, stride: Vec<usize>, offset: usize| TensorRef {
            dtype: DType::F32,
            key: Rc::from("0"),
            storage_len: 12,
            offset,
            shape,
            stride,
        };
        check_geometry(&t(vec![3, 4], vec![4, 1], 0)).unwrap();
        check_geometry(&t(vec![4, 3], vec![1, 4], 0)).unwrap();
        check_geometry(&t(vec![2, 4], vec![4, 1], 4)).unwrap();
        for bad in [
            t(vec![1 << 20, 1 << 20], vec![1 << 20, 1], 0),
            t(vec![1 << 20, 1 << 20], vec![0, 0], 0),
            t(vec![3, 4], vec![4, 1], 1),
            t(vec![usize::MAX, 2], vec![2, 1], 0),
            t(vec![2; 9], vec![1; 9], 0),
        ] {
            let err = check_geometry(&bad).unwrap_err();
            assert!(
                err.contains("storage") || err.contains("overflows") || err.contains("accepts"),
                "{err}"
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never panic, and never allocate more than the input allows.
            #[test]
            fn arbitrary_bytes_are_an_error_or_a_value(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_state_dict(&data);
            }

            /// A valid prefix followed by arbitrary bytes: the same.
            #[test]
            fn noise_after_a_header(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut data = vec![0x80, 2, b'}', b'q', 0, b'('];
                data.extend(tail);
                let _ = parse_state_dict(&data);
            }

            /// Whatever the geometry, an accepted tensor lies inside its storage.
            #[test]
            fn accepted_geometry_fits(
                shape in proptest::collection::vec(0usize..6, 0..4),
                stride in proptest::collection::vec(0usize..8, 0..4),
                offset in 0usize..20,
                storage_len in 0usize..64,
            ) {
                let n = shape.len().min(stride.len());
                let t = TensorRef {
                    dtype: DType::F32,
                    key: Rc::from("0"),
                    storage_len,
                    offset,
                    shape: shape[..n].to_vec(),
                    stride: stride[..n].to_vec(),
                };
                if check_geometry(&t).is_ok() {
                    let storage = vec![0u8; storage_len * 4];
                    let tensor = materialise(&t, &storage).unwrap();
                    prop_assert_eq!(tensor.dims(), &t.shape[..]);
                }
            }
        }
    }
}
