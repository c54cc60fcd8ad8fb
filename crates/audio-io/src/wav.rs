//! Fast path for plain PCM / IEEE-float WAV: our own RIFF walk, the `data` chunk read in
//! large blocks, conversion and channel mean in one loop.
//!
//! The fast path accepts only files that symphonia 0.6.1 (the general path) would decode
//! without complaint and to the same samples: the RIFF walk mirrors symphonia-format-riff's
//! `ChunksReader` (word alignment, chunk lengths checked against the parent), the `fmt `
//! chunk must be one of the layouts its `WaveFormatChunk` parser reads exactly (PCM 8/16/24/32
//! bit, float 32/64 bit, WAVE_FORMAT_EXTENSIBLE with the PCM or float sub-type, a channel mask
//! naming exactly the channel count), `LIST INFO` sub-chunks must be well formed, `fact`
//! chunks 4 bytes, and the whole `data` chunk must be present in the file. Anything else,
//! including every malformed or truncated file, returns `None` and goes to symphonia, so every
//! error keeps the type and message it had. The header fields never size an allocation: the
//! data is read in [`BLOCK_BYTES`] blocks, and the output is pre-sized from the frame count,
//! which was checked against the file's actual length.
//!
//! Sample values are symphonia's conversions bit for bit (`i16 / 32768`, `i24 / 2^23`,
//! `(i32 as f64 / 2^31) as f32`, `u8 / 128 - 1`, `f64 as f32`), and the channel mean is the
//! same expression as in `decode::downmix`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Bytes of `data` converted per step (a multiple of every frame size is taken below it).
pub(crate) const BLOCK_BYTES: usize = 1 << 16;

/// Sample encodings the fast path decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    U8,
    S16,
    S24,
    S32,
    F32,
    F64,
}

impl Encoding {
    fn width(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::S16 => 2,
            Encoding::S24 => 3,
            Encoding::S32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(self, Encoding::F32 | Encoding::F64)
    }
}

/// A WAV file the fast path can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastWav {
    pub(crate) encoding: Encoding,
    pub(crate) channels: usize,
    pub(crate) sample_rate: u32,
    /// Byte offset of the first sample.
    pub(crate) data_start: u64,
    /// Whole frames in the `data` chunk (all present in the file).
    pub(crate) frames: u64,
}

impl FastWav {
    pub(crate) fn frame_bytes(&self) -> usize {
        self.channels * self.encoding.width()
    }
}

/// Random access to the file's bytes for the header walk.
pub(crate) trait ReadAt {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Fill `buf` from `pos`; `false` when the bytes are not all there (or on I/O error: the
    /// general path will then report it properly).
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool;
}

impl ReadAt for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(pos) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// A file with its first bytes already read (served from memory when the range is there).
pub(crate) struct HeadedFile<'a> {
    pub(crate) file: &'a mut File,
    pub(crate) head: &'a [u8],
    pub(crate) len: u64,
}

impl ReadAt for HeadedFile<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool {
        let end = pos.saturating_add(buf.len() as u64);
        if end > self.len {
            return false;
        }
        if end <= self.head.len() as u64 {
            buf.copy_from_slice(&self.head[pos as usize..end as usize]);
            return true;
        }
        self.file.seek(SeekFrom::Start(pos)).is_ok() && self.file.read_exact(buf).is_ok()
    }
}

fn u16_le(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_le(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
];

/// Parse a `fmt ` chunk body (`len` bytes at `pos`) into (encoding, channels, rate).
fn parse_fmt(src: &mut impl ReadAt, pos: u64, len: u32) -> Option<(Encoding, usize, u32)> {
    if !matches!(len, 16 | 18 | 40) {
        return None;
    }
    let mut b = [0u8; 40];
    let b = &mut b[..len as usize];
    if !src.read_at(pos, b) {
        return None;
    }
    let (tag, channels, rate) = (u16_le(b, 0), u16_le(b, 2), u32_le(b, 4));
    let (block_align, bits) = (u16_le(b, 12), u16_le(b, 14));
    let int = |bits| match bits {
        8 => Some(Encoding::U8),
        16 => Some(Encoding::S16),
        24 => Some(Encoding::S24),
        32 => Some(Encoding::S32),
        _ => None,
    };
    let float = |bits| match bits {
        32 => Some(Encoding::F32),
        64 => Some(Encoding::F64),
        _ => None,
    };
    let encoding = match tag {
        1 => int(bits)?,
        3 => {
            if len == 18 && u16_le(b, 16) != 0 {
                return None;
            }
            float(bits)?
        }
        0xFFFE => {
            if len != 40 || u16_le(b, 16) != 22 || u16_le(b, 18) != bits {
                return None;
            }
            let mask = u32_le(b, 20);
            if mask >> 18 != 0 || mask.count_ones() != u32::from(channels) {
                return None;
            }
            if b[26..40] != GUID_TAIL || b[25] != 0 {
                return None;
            }
            match b[24] {
                1 => int(bits)?,
                3 => float(bits)?,
                _ => return None,
            }
        }
        _ => return None,
    };
    if !(1..=26).contains(&channels)
        || usize::from(block_align) != usize::from(channels) * encoding.width()
        || !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate)
    {
        return None;
    }
    Some((encoding, usize::from(channels), rate))
}

/// Walk the chunks of a RIFF chunk body (`parent` bytes from `pos`) as symphonia's
/// `ChunksReader` does, calling `visit(tag, len, body_pos)` for each; stops when `visit`
/// returns `Some`. `None` from the walk: the chunks ran out or one was malformed.
fn walk<T>(
    src: &mut impl ReadAt,
    mut pos: u64,
    parent: u64,
    mut visit: impl FnMut(&mut dyn FnMut(u64, &mut [u8]) -> bool, [u8; 4], u32, u64) -> Visit<T>,
) -> Option<Option<T>> {
    let mut consumed = 0u64;
    loop {
        if consumed >= parent {
            return Some(None);
        }
        if consumed & 1 == 1 {
            if !src.read_at(pos, &mut [0u8]) {
                return None;
            }
            pos += 1;
            consumed += 1;
        }
        if consumed + 8 > parent {
            return Some(None);
        }
        let mut header = [0u8; 8];
        if !src.read_at(pos, &mut header) {
            return None;
        }
        let tag = [header[0], header[1], header[2], header[3]];
        let len = u32_le(&header, 4);
        consumed += 8;
        pos += 8;
        if parent - consumed < u64::from(len) {
            return None;
        }
        consumed += u64::from(len);
        let mut read = |p: u64, buf: &mut [u8]| src.read_at(p, buf);
        match visit(&mut read, tag, len, pos) {
            Visit::Next => {}
            Visit::Done(t) => return Some(Some(t)),
            Visit::Reject => return None,
        }
        pos += u64::from(len);
    }
}

enum Visit<T> {
    Next,
    Done(T),
    Reject,
}

/// The fast-path facts of a WAV file, or `None` for anything the general path should handle.
pub(crate) fn parse(src: &mut impl ReadAt) -> Option<FastWav> {
    let mut head = [0u8; 12];
    if !src.read_at(0, &mut head) || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let riff_len = u32_le(&head, 4);
    if riff_len < 4 || riff_len == u32::MAX {
        return None;
    }
    let file_len = src.len();
    // Chunk facts gathered before `data` (the closure cannot borrow `src` twice, so `fmt `
    // and LIST bodies are read through the reader handed to it).
    let mut format: Option<(Encoding, usize, u32)> = None;
    let found = walk(src, 12, u64::from(riff_len) - 4, |read, tag, len, body| {
        match &tag {
            b"fmt " => {
                if format.is_some() {
                    return Visit::Reject;
                }
                let mut bytes = BytesAt {
                    read,
                    len: file_len,
                };
                match parse_fmt(&mut bytes, body, len) {
                    Some(f) => {
                        format = Some(f);
                        Visit::Next
                    }
                    None => Visit::Reject,
                }
            }
            b"fact" => {
                let mut b = [0u8; 4];
                if len == 4 && read(body, &mut b) {
                    Visit::Next
                } else {
                    Visit::Reject
                }
            }
            b"LIST" => {
                let mut form = [0u8; 4];
                if len < 4 || !read(body, &mut form) {
                    return Visit::Reject;
                }
                if &form == b"INFO" {
                    // Every INFO sub-chunk must fit the list and be present in the file.
                    let mut bytes = BytesAt {
                        read,
                        len: file_len,
                    };
                    let ok = walk(&mut bytes, body + 4, u64::from(len - 4), |_, _, sub, at| {
                        if at + u64::from(sub) <= file_len {
                            Visit::<()>::Next
                        } else {
                            Visit::Reject
                        }
                    });
                    if ok.is_none() {
                        return Visit::Reject;
                    }
                }
                Visit::Next
            }
            b"data" => match format {
                Some((encoding, channels, sample_rate)) => {
                    let frame = (channels * encoding.width()) as u64;
                    let frames = u64::from(len) / frame;
                    if body + u64::from(len) > file_len || frames == 0 {
                        return Visit::Reject;
                    }
                    Visit::Done(FastWav {
                        encoding,
                        channels,
                        sample_rate,
                        data_start: body,
                        frames,
                    })
                }
                None => Visit::Reject,
            },
            _ => Visit::Next,
        }
    });
    found.flatten()
}

/// A [`ReadAt`] over the reader closure handed to a chunk visitor.
struct BytesAt<'r> {
    read: &'r mut dyn FnMut(u64, &mut [u8]) -> bool,
    len: u64,
}

impl ReadAt for BytesAt<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool {
        (self.read)(pos, buf)
    }
}

/// Convert whole frames of `data` to their channel mean, appended to `mono`.
pub(crate) fn frames_to_mono(
    data: &[u8],
    encoding: Encoding,
    channels: usize,
    mono: &mut Vec<f32>,
) {
    match encoding {
        Encoding::U8 => mean::<1>(data, channels, mono, |b| f32::from(b[0]) / 128.0 - 1.0),
        Encoding::S16 => mean::<2>(data, channels, mono, |b| {
            f32::from(i16::from_le_bytes(b)) / 32_768.0
        }),
        Encoding::S24 => mean::<3>(data, channels, mono, |b| {
            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
        }),
        Encoding::S32 => mean::<4>(data, channels, mono, |b| {
            (f64::from(i32::from_le_bytes(b)) / 2_147_483_648.0) as f32
        }),
        Encoding::F32 => mean::<4>(data, channels, mono, f32::from_le_bytes),
        Encoding::F64 => mean::<8>(data, channels, mono, |b| f64::from_le_bytes(b) as f32),
    }
}

#[inline(always)]
fn mean<const W: usize>(
    data: &[u8],
    channels: usize,
    mono: &mut Vec<f32>,
    conv: impl Fn([u8; W]) -> f32 + Copy,
) {
    let sample = |s: &[u8]| conv(s.try_into().expect("W bytes"));
    match channels {
        1 => mono.extend(data.chunks_exact(W).map(sample)),
        2 => mono.extend(
            data.chunks_exact(2 * W)
                .map(|f| (sample(&f[..W]) + sample(&f[W..])) / 2.0),
        ),
        _ => mono.extend(data.chunks_exact(channels * W).map(|f| {
            let mut s = sample(&f[..W]);
            for c in f[W..].chunks_exact(W) {
                s += sample(c);
            }
            s / channels as f32
        })),
    }
}
