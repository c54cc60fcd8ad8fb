//! The matrix products of the CPU path: `C = A · B (+ bias)` with `B` (a weight) packed once at
//! load time, in fp32 or in bf16 with fp32 accumulation.
//!
//! Why our own: candle's CPU matmul (the `gemm` crate) runs its AVX2 micro-kernel on stable Rust
//! (its AVX-512 kernels need nightly), which reaches about half of an AVX-512 machine's fp32
//! peak, and it has no bf16 dot-product kernel. Here, on CPUs with AVX-512F, a 14x32 register
//! micro-kernel (28 zmm accumulators, `vfmadd231ps` with broadcast A), BLIS-style blocking
//! (A packed per `KC` x `MC` block into L2, a `KC` x 32 panel of B streamed from L1), and, on CPUs
//! with AVX512_BF16, the same kernel on `vdpbf16ps` (pairs of bf16 products summed into f32
//! lanes, the instruction oneDNN uses for PyTorch's bf16 matmuls). Elsewhere (no AVX-512, or
//! `HUBERT_PROBE_CPU=portable`), the `gemm` crate. Which kernel may run is decided
//! by the one CPU feature detector, [`crate::cpu::features`].
//!
//! Numerics: fp32 sums in a different order from PyTorch's (the parity tests bound the effect);
//! bf16 rounds A and B to nearest-even bf16 and accumulates every product in f32.

/// Rows of the register tile.
const MR: usize = 14;
/// Columns of the register tile (two zmm registers).
const NR: usize = 32;
/// Depth of a packed block (in k for f32, in k-pairs for bf16).
const KC: usize = 256;
/// Rows of a packed A block.
const MC: usize = MR * 12;

/// Which micro-kernel a packed operand was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The `gemm` crate (any CPU).
    Portable,
    /// fp32 AVX-512F micro-kernel.
    Avx512,
    /// bf16 AVX512_BF16 micro-kernel, fp32 accumulation.
    Avx512Bf16,
}

impl Kernel {
    /// (fp32 AVX-512 kernel usable, bf16 kernel usable) per [`crate::cpu::features`].
    fn detect() -> (bool, bool) {
        let f = crate::cpu::features();
        let avx512 = cfg!(target_arch = "x86_64") && f.isa == crate::cpu::Isa::Avx512;
        (avx512, avx512 && f.avx512_bf16)
    }

    /// Whether this CPU (as [`crate::cpu::features`] reports it) can run the kernel.
    pub fn is_available(self) -> bool {
        Self::available().contains(&self)
    }

    /// The fastest fp32 kernel of this CPU.
    pub fn best_f32() -> Self {
        if Self::detect().0 {
            Self::Avx512
        } else {
            Self::Portable
        }
    }

    /// The bf16 kernel where the CPU has AVX512_BF16, else [`Kernel::best_f32`] (fp32 fallback).
    pub fn best_bf16() -> Self {
        if Self::detect().1 {
            Self::Avx512Bf16
        } else {
            Self::best_f32()
        }
    }

    /// Every kernel this CPU can run (for tests).
    pub fn available() -> Vec<Self> {
        let (f, bf) = Self::detect();
        let mut v = vec![Self::Portable];
        if f {
            v.push(Self::Avx512);
        }
        if bf {
            v.push(Self::Avx512Bf16);
        }
        v
    }

    /// Whether the kernel rounds its operands to bf16.
    pub fn is_bf16(self) -> bool {
        self == Self::Avx512Bf16
    }
}

/// Rounds to the nearest bf16, ties to even (NaN stays NaN), as PyTorch's `.to(bfloat16)`.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16 bit pattern.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[derive(Debug, Clone)]
enum Data {
    /// `[k, n]` row-major, for the portable kernel.
    Plain(Vec<f32>),
    /// Column panels of `NR` values (zero padded), in blocks of `KC` rows: block by block, each
    /// panel's rows of the block ([`slot`]).
    F32(Vec<f32>),
    /// The same over k-pairs: `u32` = bf16(B[2p][col]) | bf16(B[2p+1][col]) << 16.
    Bf16(Vec<u32>),
}

/// Where depth row `q` (of `kd`) of column panel `p` (of `panels`) starts in a packed B: blocks
/// of `KC` rows one after the other, and in each block the panels one after the other (`kc x NR`
/// each). The products walk a block's panels in order, so B streams through memory
/// sequentially, which the hardware prefetchers follow (panel-major storage jumped `k x NR`
/// values from one panel to the next).
fn slot(kd: usize, panels: usize, p: usize, q: usize) -> usize {
    let k0 = q / KC * KC;
    let kc = KC.min(kd - k0);
    (k0 * panels + p * kc + (q - k0)) * NR
}

/// The right operand `B` (`[k, n]`) of a product, packed for one [`Kernel`].
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Data,
}

impl PackedB {
    /// Packs `B[i][j] = src[i * rs + j * cs]` for `i < k`, `j < n`.
    ///
    /// # Panics
    /// If `src` is too short for the strides.
    pub fn new(kernel: Kernel, k: usize, n: usize, src: &[f32], rs: usize, cs: usize) -> Self {
        if k > 0 && n > 0 {
            assert!(
                (k - 1) * rs + (n - 1) * cs < src.len(),
                "B source too short"
            );
        }
        // The micro-kernels that read this operand run only where the detector allows them:
        // packing for another kernel is a bug, caught here rather than as an illegal instruction.
        assert!(
            kernel.is_available(),
            "GEMM kernel {kernel:?} is not available on this CPU ({:?})",
            crate::cpu::features()
        );
        let at = |i: usize, j: usize| src[i * rs + j * cs];
        let panels = n.div_ceil(NR);
        let data = match kernel {
            Kernel::Portable => {
                let mut v = Vec::with_capacity(k * n);
                for i in 0..k {
                    v.extend((0..n).map(|j| at(i, j)));
                }
                Data::Plain(v)
            }
            Kernel::Avx512 if cs == 1 => {
                // Rows of B are contiguous: each panel row is one copy.
                let mut v = vec![0f32; panels * k * NR];
                for p in 0..panels {
                    let cols = NR.min(n - p * NR);
                    for i in 0..k {
                        let (at, start) = (slot(k, panels, p, i), i * rs + p * NR);
                        v[at..at + cols].copy_from_slice(&src[start..start + cols]);
                    }
                }
                Data::F32(v)
            }
            Kernel::Avx512 => {
                let mut v = vec![0f32; panels * k * NR];
                for p in 0..panels {
                    for i in 0..k {
                        let row = slot(k, panels, p, i);
                        for j in 0..NR.min(n - p * NR) {
                            v[row + j] = at(i, p * NR + j);
                        }
                    }
                }
                Data::F32(v)
            }
            Kernel::Avx512Bf16 => {
                let kp = k.div_ceil(2);
                let mut v = vec![0u32; panels * kp * NR];
                for p in 0..panels {
                    for q in 0..kp {
                        let row = slot(kp, panels, p, q);
                        for j in 0..NR.min(n - p * NR) {
                            let lo = bf16_bits(at(2 * q, p * NR + j)) as u32;
                            let hi = if 2 * q + 1 < k {
                                bf16_bits(at(2 * q + 1, p * NR + j)) as u32
                            } else {
                                0
                            };
                            v[row + j] = lo | (hi << 16);
                        }
                    }
                }
                Data::Bf16(v)
            }
        };
        Self { k, n, data }
    }

    /// Packs the weight of `nn.Linear(k, n)`: PyTorch stores it as `[n, k]`, and `y = x W^T`.
    pub fn linear(kernel: Kernel, weight: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(weight.len(), k * n, "linear weight is [n, k]");
        Self::new(kernel, k, n, weight, 1, k)
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The kernel this operand was packed for.
    pub fn kernel(&self) -> Kernel {
        match self.data {
            Data::Plain(_) => Kernel::Portable,
            Data::F32(_) => Kernel::Avx512,
            Data::Bf16(_) => Kernel::Avx512Bf16,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::Plain(v) | Data::F32(v) => v.len() * 4,
            Data::Bf16(v) => v.len() * 4,
        }
    }
}

/// What `C` starts from.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// `C = A·B`.
    Zero,
    /// `C = A·B + bias` (one value per column).
    Bias(&'a [f32]),
    /// `C += A·B`.
    Accumulate,
}

impl<'a> Init<'a> {
    /// [`Init::Bias`] for a layer with a bias, [`Init::Zero`] for one without.
    pub fn bias_or_zero(bias: Option<&'a [f32]>) -> Self {
        bias.map_or(Init::Zero, Init::Bias)
    }
}

/// A pointer that may cross threads: the tasks of one product write disjoint tiles of `C`.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used for disjoint writes, see `gemm_raw`.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

/// `C[i*ldc + j] = init + sum_p A[i*lda + p] * B[p][j]` for `i < m`, `j < b.n()`, with up to
/// `threads` rayon tasks. Rows of A may overlap (`lda < k`): that is how convs run.
///
/// # Panics
/// If the slices are too short for `m`, the strides and `b`'s shape, or a bias has the wrong
/// length.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    init: Init<'_>,
    threads: usize,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(a.len() >= (m - 1) * lda + b.k, "A too short");
    assert!(c.len() >= (m - 1) * ldc + b.n, "C too short");
    // SAFETY: bounds checked just above.
    unsafe { gemm_raw(m, a.as_ptr(), lda, b, c.as_mut_ptr(), ldc, init, threads) }
}

/// `A·B (+ bias)` into a new `[m, n]` buffer (not zeroed first: the product writes every
/// value).
///
/// # Panics
/// As [`gemm`], and for [`Init::Accumulate`] (there is nothing to accumulate into).
pub fn gemm_new(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    init: Init<'_>,
    threads: usize,
) -> Vec<f32> {
    assert!(
        !matches!(init, Init::Accumulate),
        "a new buffer has nothing to accumulate"
    );
    let n = b.n;
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    assert!(a.len() >= (m - 1) * lda + b.k, "A too short");
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: A is checked above; C has capacity m*n and every value of the m x n tile is
    // written (Zero and Bias store all of it) before the length is set.
    unsafe {
        gemm_raw(m, a.as_ptr(), lda, b, c.as_mut_ptr(), n, init, threads);
        c.set_len(m * n);
    }
    c
}

/// The element type of A's rows: f32 values, or bf16 bit patterns ([`bf16_bits`]) read in place
/// by the bf16 kernel (no rounding pass over A).
pub trait AElem: Copy + Send + Sync + 'static {
    /// The rows at `a`, tagged with their element type.
    fn rows(a: *const Self) -> ARows;
}

/// Rows of A tagged with their element type ([`AElem`]).
#[derive(Debug, Clone, Copy)]
pub enum ARows {
    /// f32 values.
    F32(*const f32),
    /// bf16 bit patterns.
    Bf16(*const u16),
}

impl AElem for f32 {
    fn rows(a: *const f32) -> ARows {
        ARows::F32(a)
    }
}

impl AElem for u16 {
    fn rows(a: *const u16) -> ARows {
        ARows::Bf16(a)
    }
}

#[allow(clippy::too_many_arguments)]
/// [`gemm`] on raw pointers, for callers that write disjoint column ranges of one buffer from
/// several threads. A is f32 values, or bf16 bit patterns `lda` values apart for B packed for
/// [`Kernel::Avx512Bf16`] with an even `k`.
///
/// # Panics
/// If A is bf16 and B is not packed for the bf16 kernel or `k` is odd, or a bias has the wrong
/// length.
///
/// # Safety
/// `a` must be valid for reads of `(m - 1) * lda + b.k()` values and `c` for reads and writes of
/// `(m - 1) * ldc + b.n()`, with no other thread touching the `m x n` tile of `c` meanwhile.
pub unsafe fn gemm_raw<T: AElem>(
    m: usize,
    a: *const T,
    lda: usize,
    b: &PackedB,
    c: *mut f32,
    ldc: usize,
    init: Init<'_>,
    threads: usize,
) {
    let (k, n) = (b.k, b.n);
    let rows = T::rows(a);
    if let ARows::Bf16(_) = rows {
        assert!(
            matches!(b.data, Data::Bf16(_)) && k.is_multiple_of(2),
            "bf16 rows need B packed for the bf16 kernel and an even k"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if let Init::Bias(bias) = init {
        assert_eq!(bias.len(), n, "one bias per column");
    }
    match (rows, &b.data) {
        (ARows::F32(a), Data::Plain(w)) => portable(m, n, k, a, lda, w, c, ldc, init, threads),
        #[cfg(target_arch = "x86_64")]
        (rows, _) => {
            let (lhs, rounded) = match rows {
                ARows::F32(a) => f32_lhs(m, a, lda, b),
                ARows::Bf16(a) => (LhsPtr::DirectBf16(SendPtr(a as *mut u16)), None),
            };
            run_tasks(m, lhs, lda, b, SendPtr(c), ldc, init, threads.max(1));
            drop(rounded);
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("AVX-512 operands are only packed on x86_64"),
    }
}

#[allow(clippy::too_many_arguments)]
/// The product through the `gemm` crate, B stored `[k, n]` row-major in `w`.
///
/// # Safety
/// As [`gemm_raw`]: `a` valid for reads of `(m - 1) * lda + k` values, `c` for reads and writes
/// of `(m - 1) * ldc + n`, the tile of `c` not touched by another thread meanwhile.
unsafe fn portable(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    w: &[f32],
    c: *mut f32,
    ldc: usize,
    init: Init<'_>,
    threads: usize,
) {
    let accumulate = match init {
        Init::Zero => false,
        Init::Accumulate => true,
        Init::Bias(bias) => {
            for i in 0..m {
                std::ptr::copy_nonoverlapping(bias.as_ptr(), c.add(i * ldc), n);
            }
            true
        }
    };
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(c.add(i * ldc), 0, n);
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a,
        1,
        lda as isize,
        w.as_ptr(),
        1,
        n as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// [`x86::Lhs`] that may cross threads.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum LhsPtr {
    Packed(SendPtr<f32>),
    DirectF32(SendPtr<f32>),
    DirectBf16(SendPtr<u16>),
}

#[cfg(target_arch = "x86_64")]
impl LhsPtr {
    fn get(self) -> x86::Lhs {
        match self {
            Self::Packed(p) => x86::Lhs::Packed(p.get()),
            Self::DirectF32(p) => x86::Lhs::DirectF32(p.get()),
            Self::DirectBf16(p) => x86::Lhs::DirectBf16(p.get()),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests force packing (`Some(true)`) or in-place reads (`Some(false)`) of A.
    static FORCE_PACK: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the tasks pack A per block (BLIS) or read its rows in place. Measured with
/// `benches/gemm.rs`: packing costs one pass over A per product, which few column panels do not
/// amortise (n <= 128: the positional conv's groups); reading 14 rows in place is fastest
/// elsewhere, unless their stride is a multiple of 2 KiB, where the rows fall into the same L1
/// sets and evict each other (the 3072-wide FFN output, the 1024-wide conv rows): f32 then packs.
/// bf16 always reads rows (rounded to bf16 once per product) when k is even.
#[cfg(target_arch = "x86_64")]
fn pack_lhs(n: usize, lda: usize, bf16: bool) -> bool {
    #[cfg(test)]
    if let Some(force) = FORCE_PACK.with(|f| f.get()) {
        return force;
    }
    !bf16 && n > 4 * NR && (lda * 4).is_multiple_of(2048)
}

/// A row stride of at least `n` values of `elem_bytes` bytes for a buffer that will be read as
/// A: rows a multiple of 1 KiB apart map to the same few L1 sets, and the 14 rows a tile reads
/// in place evict each other (or force packing: [`pack_lhs`]); one cache line more avoids it.
/// Measured with `benches/gemm.rs`: the FFN output product with rows 3072 wide 192-200
/// GFLOP/s (A packed), padded to 3088 209-212 (read in place).
pub fn padded_ld(n: usize, elem_bytes: usize) -> usize {
    if (n * elem_bytes).is_multiple_of(1024) {
        n + 64 / elem_bytes
    } else {
        n
    }
}

/// Rounds a slice to bf16 bit patterns (vectorised; in parallel for large inputs).
pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; x.len()];
    let convert = |(dst, src): (&mut [u16], &[f32])| {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = bf16_bits(v);
        }
    };
    if x.len() >= 1 << 16 {
        use rayon::prelude::*;
        out.par_chunks_mut(1 << 15)
            .zip(x.par_chunks(1 << 15))
            .for_each(convert);
    } else {
        convert((&mut out, x));
    }
    out
}

#[cfg(target_arch = "x86_64")]
/// How the tasks read f32 rows of A: packed per block, in place, or rounded to bf16 once (for B
/// packed for the bf16 kernel, when not packing and `k` is even: every pair inside the row),
/// with the rounded copy, which must outlive the tasks.
///
/// # Safety
/// `a` must be valid for reads of `(m - 1) * lda + b.k()` values, `m > 0`.
unsafe fn f32_lhs(m: usize, a: *const f32, lda: usize, b: &PackedB) -> (LhsPtr, Option<Vec<u16>>) {
    let bf16 = matches!(b.data, Data::Bf16(_));
    let pack = pack_lhs(b.n, lda, bf16);
    let converted: Option<Vec<u16>> = (bf16 && !pack && b.k.is_multiple_of(2)).then(|| {
        let len = (m - 1) * lda + b.k;
        to_bf16(std::slice::from_raw_parts(a, len))
    });
    let lhs = match (&converted, bf16, pack) {
        (Some(v), _, _) => LhsPtr::DirectBf16(SendPtr(v.as_ptr() as *mut u16)),
        (None, false, false) => LhsPtr::DirectF32(SendPtr(a as *mut f32)),
        _ => LhsPtr::Packed(SendPtr(a as *mut f32)),
    };
    (lhs, converted)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
/// Runs the product's tasks over row blocks (and column panels when there are fewer row
/// blocks than threads); the tasks write disjoint tiles of `c`.
///
/// # Safety
/// As [`gemm_raw`], with A read through `lhs` (f32 or bf16 rows as its variant says) and `b`
/// packed for an AVX-512 kernel the CPU runs ([`PackedB::new`] checks the detector).
unsafe fn run_tasks(
    m: usize,
    lhs: LhsPtr,
    lda: usize,
    b: &PackedB,
    c: SendPtr<f32>,
    ldc: usize,
    init: Init<'_>,
    threads: usize,
) {
    let panels = b.n.div_ceil(NR);
    let row_tiles = m.div_ceil(MR);
    // Rows split between threads at tile granularity, unless few tiles split unevenly (199
    // frames = 15 tiles: 8 against 7) and the column panels split evenly: then columns.
    let uneven = |units: usize| units.div_ceil(threads) * threads * 1000 / units.max(1);
    let by_cols = row_tiles < 32 && uneven(panels) < uneven(row_tiles);
    let row_tasks = if by_cols { 1 } else { threads.min(row_tiles) };
    let col_tasks = threads.div_ceil(row_tasks).min(panels);
    let tasks = row_tasks * col_tasks;
    let run = |task: usize| {
        let (rt, ct) = (task / col_tasks, task % col_tasks);
        let tiles = (row_tiles * rt / row_tasks, row_tiles * (rt + 1) / row_tasks);
        let rows = (tiles.0 * MR, (tiles.1 * MR).min(m));
        let cols = (panels * ct / col_tasks, panels * (ct + 1) / col_tasks);
        // SAFETY: tasks cover disjoint (row range x panel range) tiles of C; reads are within
        // the caller's bounds.
        unsafe { x86::block_task(rows, cols, lhs.get(), lda, b, c.get(), ldc, init) };
    };
    if tasks <= 1 {
        run(0);
    } else {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{bf16_bits, slot, Data, Init, PackedB, KC, MC, MR, NR};
    use std::arch::x86_64::*;

    /// How a micro-tile of C starts.
    #[derive(Clone, Copy)]
    enum Start {
        Zero,
        Bias(*const f32),
        Load,
    }

    /// The part of C a micro-tile kernel writes: `rows` rows from `c`, `ldc` apart, the columns
    /// of the masks `m0` (first 16) and `m1` (next 16), starting from `start`.
    #[derive(Clone, Copy)]
    struct CTile {
        c: *mut f32,
        ldc: usize,
        rows: usize,
        m0: u16,
        m1: u16,
        start: Start,
    }

    /// The block of A a task packs: rows `ic..ic + mc` (`tiles` row tiles), depth units
    /// `k0..k0 + kc`.
    #[derive(Clone, Copy)]
    struct ABlock {
        ic: usize,
        mc: usize,
        tiles: usize,
        k0: usize,
        kc: usize,
    }

    /// Column masks of panel `p` for `n` columns.
    fn masks(p: usize, n: usize) -> (u16, u16) {
        let cols = (n - p * NR).min(NR);
        let m = |c: usize| -> u16 {
            if c >= 16 {
                0xffff
            } else {
                ((1u32 << c) - 1) as u16
            }
        };
        (m(cols), m(cols.saturating_sub(16)))
    }

    /// Where the tasks read A: f32 rows (packed per block, or read in place by the f32
    /// kernel), or rows already rounded to bf16 (read in place by the bf16 kernel).
    #[derive(Clone, Copy)]
    pub(super) enum Lhs {
        Packed(*const f32),
        DirectF32(*const f32),
        DirectBf16(*const u16),
    }

    #[allow(clippy::too_many_arguments)]
    /// Rows `rows.0..rows.1` x panels `cols.0..cols.1` of the product.
    ///
    /// # Safety
    /// A (through `a`, `lda` apart) must be readable for rows `rows.0..rows.1` and the whole
    /// depth of `b`; `c` readable and writable for those rows (`ldc` apart) and the columns of
    /// panels `cols.0..cols.1`, which no other thread touches meanwhile; the CPU must run the
    /// kernel `b` is packed for.
    pub(super) unsafe fn block_task(
        rows: (usize, usize),
        cols: (usize, usize),
        a: Lhs,
        lda: usize,
        b: &PackedB,
        c: *mut f32,
        ldc: usize,
        init: Init<'_>,
    ) {
        let (k, n) = (b.k, b.n);
        let panels = n.div_ceil(NR);
        let bf16 = matches!(b.data, Data::Bf16(_));
        // Depth in packed units: k values (f32) or k-pairs (bf16); `per` values per unit.
        let per = if bf16 { 2 } else { 1 };
        let kd = k.div_ceil(per);
        let packed = matches!(a, Lhs::Packed(_));
        let pack_rows = if packed {
            MC.min((rows.1 - rows.0).div_ceil(MR) * MR)
        } else {
            MR
        };
        // Packed panels ([kc][MR] units), or in direct mode the zero-padded last tile
        // ([MR][kc * per] values, as u32 slots holding f32 or two bf16).
        let mut apack: Vec<u32> = vec![0; pack_rows * KC];
        let mut ic = rows.0;
        while ic < rows.1 {
            let mc = MC.min(rows.1 - ic);
            let tiles = mc.div_ceil(MR);
            let mut k0 = 0;
            while k0 < kd.max(1) {
                let kc = KC.min(kd - k0);
                let block = ABlock {
                    ic,
                    mc,
                    tiles,
                    k0,
                    kc,
                };
                match a {
                    // Gather offsets are i32: 15 rows of lda must fit.
                    Lhs::Packed(a) if !bf16 && lda < (i32::MAX as usize) / 16 => {
                        pack_f32(&mut apack, a, lda, block)
                    }
                    Lhs::Packed(a) => pack(&mut apack, a, lda, block, k, bf16),
                    Lhs::DirectF32(a) if !mc.is_multiple_of(MR) => {
                        let (t, r) = (tiles - 1, mc % MR);
                        apack.fill(0);
                        for i in 0..r {
                            let src = a.add((ic + t * MR + i) * lda + k0);
                            for p in 0..kc {
                                apack[i * kc + p] = (*src.add(p)).to_bits();
                            }
                        }
                    }
                    Lhs::DirectBf16(a) if !mc.is_multiple_of(MR) => {
                        let (t, r) = (tiles - 1, mc % MR);
                        apack.fill(0);
                        let dst = apack.as_mut_ptr() as *mut u16;
                        for i in 0..r {
                            let src = a.add((ic + t * MR + i) * lda + 2 * k0);
                            std::ptr::copy_nonoverlapping(src, dst.add(i * 2 * kc), 2 * kc);
                        }
                    }
                    _ => {}
                }
                let start_first = match (k0, init) {
                    (0, Init::Accumulate) | (1.., _) => Start::Load,
                    // Bias: set per panel below.
                    (0, _) => Start::Zero,
                };
                for p in cols.0..cols.1 {
                    let (m0, m1) = masks(p, n);
                    let start = match (k0, init) {
                        (0, Init::Bias(bias)) => Start::Bias(bias.as_ptr().add(p * NR)),
                        _ => start_first,
                    };
                    for t in 0..tiles {
                        let r = (mc - t * MR).min(MR);
                        let row0 = ic + t * MR;
                        let out = CTile {
                            c: c.add(row0 * ldc + p * NR),
                            ldc,
                            rows: r,
                            m0,
                            m1,
                            start,
                        };
                        let tail = r < MR;
                        match (&b.data, a) {
                            (Data::F32(w), _) => {
                                let w = w.as_ptr().add(slot(kd, panels, p, k0));
                                let ap = apack.as_ptr() as *const f32;
                                match a {
                                    Lhs::Packed(_) => {
                                        kernel_f32::<false>(kc, ap.add(t * kc * MR), 0, w, out)
                                    }
                                    _ if tail => kernel_f32::<true>(kc, ap, kc, w, out),
                                    Lhs::DirectF32(a) => {
                                        kernel_f32::<true>(kc, a.add(row0 * lda + k0), lda, w, out)
                                    }
                                    Lhs::DirectBf16(_) => unreachable!("bf16 rows with f32 B"),
                                }
                            }
                            (Data::Bf16(w), _) => {
                                let w = w.as_ptr().add(slot(kd, panels, p, k0));
                                let ap = apack.as_ptr() as *const u16;
                                match a {
                                    Lhs::Packed(_) => {
                                        kernel_bf16::<false>(kc, ap.add(2 * t * kc * MR), 0, w, out)
                                    }
                                    _ if tail => kernel_bf16::<true>(kc, ap, 2 * kc, w, out),
                                    Lhs::DirectBf16(a) => kernel_bf16::<true>(
                                        kc,
                                        a.add(row0 * lda + 2 * k0),
                                        lda,
                                        w,
                                        out,
                                    ),
                                    Lhs::DirectF32(_) => unreachable!("f32 rows with bf16 B"),
                                }
                            }
                            (Data::Plain(_), _) => unreachable!("portable operands take gemm"),
                        }
                    }
                }
                k0 += KC;
            }
            ic += mc;
        }
    }

    /// Packs A[ic..ic+mc, k0..k0+kc] (units) as `tiles` panels of [kc][MR], rounding to bf16
    /// pairs for the bf16 kernel.
    ///
    /// # Safety
    /// `a` must be readable for rows `ic..ic + mc` (`lda` apart) over the `kc` units from `k0`
    /// (bounded by `k`), and `apack` hold `tiles * kc * MR` slots.
    unsafe fn pack(
        apack: &mut [u32],
        a: *const f32,
        lda: usize,
        block: ABlock,
        k: usize,
        bf16: bool,
    ) {
        let ABlock {
            ic,
            mc,
            tiles,
            k0,
            kc,
        } = block;
        for t in 0..tiles {
            let dst = &mut apack[t * kc * MR..(t + 1) * kc * MR];
            for r in 0..MR {
                let row = ic + t * MR + r;
                if row >= ic + mc {
                    for p in 0..kc {
                        dst[p * MR + r] = 0;
                    }
                    continue;
                }
                let src = a.add(row * lda);
                if bf16 {
                    for p in 0..kc {
                        let kk = 2 * (k0 + p);
                        let lo = bf16_bits(*src.add(kk)) as u32;
                        let hi = if kk + 1 < k {
                            bf16_bits(*src.add(kk + 1)) as u32
                        } else {
                            0
                        };
                        dst[p * MR + r] = lo | (hi << 16);
                    }
                } else {
                    for p in 0..kc {
                        dst[p * MR + r] = (*src.add(k0 + p)).to_bits();
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    /// The f32 case of [`pack`] with one masked gather of the tile's 14 rows per k (the scalar
    /// transposition costs more than the gathers on the conv layers' long rows).
    ///
    /// # Safety
    /// As [`pack`] (f32 units), `lda * 15` fitting in an `i32`, and the CPU must have AVX-512F.
    unsafe fn pack_f32(apack: &mut [u32], a: *const f32, lda: usize, block: ABlock) {
        let kc = block.kc;
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(lda as i32));
        for t in 0..block.tiles {
            let rows = (block.mc - t * MR).min(MR);
            let mask = ((1u32 << rows) - 1) as u16;
            let src = a.add((block.ic + t * MR) * lda + block.k0);
            let dst = apack.as_mut_ptr().add(t * kc * MR) as *mut f32;
            for p in 0..kc {
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, src.add(p));
                _mm512_mask_storeu_ps(dst.add(p * MR), (1 << MR) - 1, v);
            }
        }
    }

    #[inline(always)]
    /// Loads the starting tile (bias rows, C, or zeros) for `rows` valid rows.
    /// # Safety
    /// With `Start::Bias`, the pointer reads the masked columns of one row; with `Start::Load`,
    /// `c` reads `rows` rows (`ldc` apart) of the masked columns. The CPU must have AVX-512F.
    unsafe fn start_tile<const R: usize>(out: CTile) -> [[__m512; 2]; R] {
        let CTile {
            c,
            ldc,
            rows,
            m0,
            m1,
            start,
        } = out;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        match start {
            Start::Zero => {}
            Start::Bias(bias) => {
                let b0 = _mm512_maskz_loadu_ps(m0, bias);
                let b1 = _mm512_maskz_loadu_ps(m1, bias.add(16));
                for row in acc.iter_mut() {
                    *row = [b0, b1];
                }
            }
            Start::Load => {
                for (i, row) in acc.iter_mut().enumerate() {
                    if i < rows {
                        row[0] = _mm512_maskz_loadu_ps(m0, c.add(i * ldc));
                        row[1] = _mm512_maskz_loadu_ps(m1, c.add(i * ldc + 16));
                    }
                }
            }
        }
        acc
    }

    #[inline(always)]
    /// Stores the first `rows` rows of a tile, masked columns only.
    ///
    /// # Safety
    /// `c` must be writable for `rows` rows (`ldc` apart) of the masked columns, and the CPU
    /// must have AVX-512F.
    unsafe fn store_tile<const R: usize>(acc: &[[__m512; 2]; R], out: CTile) {
        let CTile {
            c,
            ldc,
            rows,
            m0,
            m1,
            ..
        } = out;
        for (i, row) in acc.iter().enumerate() {
            if i < rows {
                _mm512_mask_storeu_ps(c.add(i * ldc), m0, row[0]);
                _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, row[1]);
            }
        }
    }

    /// The tile kernel for `rows` rows: the full `MR` rows, or for a last, partial row tile the
    /// smallest of 4, 7 or 10 rows that covers it (a 199-frame clip's last tile has 3 rows: a
    /// full tile would spend 11 rows' FMAs on padding).
    macro_rules! by_rows {
        ($tile:ident, $rows:expr, $direct:ident, ($($arg:expr),*)) => {
            match $rows {
                11.. => $tile::<$direct, MR>($($arg),*),
                8..=10 => $tile::<$direct, 10>($($arg),*),
                5..=7 => $tile::<$direct, 7>($($arg),*),
                _ => $tile::<$direct, 4>($($arg),*),
            }
        };
    }

    #[inline(always)]
    /// [`tile_f32`] with as many rows as `out.rows` needs.
    ///
    /// # Safety
    /// As [`tile_f32`].
    unsafe fn kernel_f32<const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        out: CTile,
    ) {
        by_rows!(tile_f32, out.rows, DIRECT, (kc, a, lda, b, out))
    }

    #[inline(always)]
    /// [`tile_bf16`] with as many rows as `out.rows` needs.
    ///
    /// # Safety
    /// As [`tile_bf16`].
    unsafe fn kernel_bf16<const DIRECT: bool>(
        kc: usize,
        a: *const u16,
        lda: usize,
        b: *const u32,
        out: CTile,
    ) {
        by_rows!(tile_bf16, out.rows, DIRECT, (kc, a, lda, b, out))
    }

    #[target_feature(enable = "avx512f")]
    /// `R x NR` tile (`R <= MR`): `kc` steps of 2 B loads, `R` broadcasts of A, `2 R` FMAs. A is a
    /// packed `[kc][MR]` panel, or with `DIRECT` rows `lda` apart read in place.
    ///
    /// # Safety
    /// `a` must be readable for `kc` steps of the panel (`R` rows; `lda` apart with `DIRECT`),
    /// `b` for `kc * NR` values, `c` as [`start_tile`] / [`store_tile`] need; AVX-512F.
    unsafe fn tile_f32<const DIRECT: bool, const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        out: CTile,
    ) {
        let mut acc = start_tile::<R>(out);
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(if DIRECT { i * lda } else { i }));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(if DIRECT { 1 } else { MR });
            b = b.add(NR);
        }
        store_tile(&acc, out);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    /// The bf16 tile: each step is a k-pair, `vdpbf16ps` adds both products to the f32 lanes.
    /// A is a packed `[kc][MR]` panel of pairs, or with `DIRECT` bf16 rows `lda` values apart.
    ///
    /// # Safety
    /// As [`tile_f32`] with bf16 pairs in `a` and `b`; the CPU must have AVX512_BF16.
    unsafe fn tile_bf16<const DIRECT: bool, const R: usize>(
        kc: usize,
        a: *const u16,
        lda: usize,
        b: *const u32,
        out: CTile,
    ) {
        let mut acc = start_tile::<R>(out);
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const __m512i));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const __m512i));
            for (i, row) in acc.iter_mut().enumerate() {
                let pair =
                    (a.add(if DIRECT { i * lda } else { 2 * i }) as *const i32).read_unaligned();
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
            a = a.add(if DIRECT { 2 } else { 2 * MR });
            b = b.add(NR);
        }
        store_tile(&acc, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The product in f64 from the operands as the kernel sees them (rounded to bf16 or not).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        w: &[f32],
        c0: &[f32],
        ldc: usize,
        init: Init<'_>,
        bf16: bool,
    ) -> Vec<f32> {
        let r = |x: f32| if bf16 { bf16_to_f32(bf16_bits(x)) } else { x } as f64;
        let mut out = c0.to_vec();
        for i in 0..m {
            for j in 0..n {
                let mut s = match init {
                    Init::Zero => 0.0,
                    Init::Bias(b) => b[j] as f64,
                    Init::Accumulate => c0[i * ldc + j] as f64,
                };
                for p in 0..k {
                    s += r(a[i * lda + p]) * r(w[p * n + j]);
                }
                out[i * ldc + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn every_kernel_equals_the_reference_product() {
        let shapes = [
            (1, 1, 1, 1),
            (3, 5, 7, 7),
            (14, 32, 16, 16),
            (15, 33, 17, 17),
            (29, 70, 300, 300),
            (40, 48, 600, 600),
            (200, 40, 520, 520),
            (23, 20, 30, 8), // overlapping rows of A, as in a conv
            // last row tiles of 6, 8 and 10 rows (the 7- and 10-row kernels)
            (6, 20, 40, 40),
            (36, 40, 50, 50),
            (24, 33, 260, 260),
        ];
        for kernel in Kernel::available() {
            for &(m, n, k, lda) in &shapes {
                let a = values((m - 1) * lda + k, 1);
                let w = values(k * n, 2);
                let bias = values(n, 3);
                let ldc = n + 3;
                let c0 = values((m - 1) * ldc + n, 4);
                let packed = PackedB::new(kernel, k, n, &w, n, 1);
                for (init, force) in [Init::Zero, Init::Bias(&bias), Init::Accumulate]
                    .into_iter()
                    .flat_map(|i| [(i, Some(true)), (i, Some(false)), (i, None)])
                {
                    FORCE_PACK.with(|f| f.set(force));
                    for threads in [1, 2, 3] {
                        let mut c = c0.clone();
                        gemm(m, &a, lda, &packed, &mut c, ldc, init, threads);
                        let want =
                            reference(m, n, k, &a, lda, &w, &c0, ldc, init, kernel.is_bf16());
                        for (i, (&got, &want)) in c.iter().zip(&want).enumerate() {
                            let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                            assert!(
                                (got - want).abs() <= tol,
                                "{kernel:?} m={m} n={n} k={k} {init:?} pack={force:?} \
                                 threads={threads} at {i}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_rows_equal_the_rounding_product() {
        if !Kernel::available().contains(&Kernel::Avx512Bf16) {
            eprintln!("no AVX512_BF16: skipped");
            return;
        }
        for &(m, n, k, lda) in &[(1, 5, 2, 2), (17, 40, 64, 70), (30, 33, 300, 310)] {
            let a = values((m - 1) * lda + k, 7);
            let w = values(k * n, 8);
            let packed = PackedB::new(Kernel::Avx512Bf16, k, n, &w, n, 1);
            let mut want = vec![0f32; m * n];
            FORCE_PACK.with(|f| f.set(Some(false)));
            gemm(m, &a, lda, &packed, &mut want, n, Init::Zero, 2);
            FORCE_PACK.with(|f| f.set(None));
            let bits = to_bf16(&a);
            let mut got = vec![0f32; m * n];
            // SAFETY: `bits` holds (m-1)*lda + k values, `got` m*n.
            unsafe {
                gemm_raw(
                    m,
                    bits.as_ptr(),
                    lda,
                    &packed,
                    got.as_mut_ptr(),
                    n,
                    Init::Zero,
                    2,
                )
            };
            assert_eq!(got, want, "m={m} n={n} k={k}");
        }
    }

    #[test]
    fn linear_packing_transposes_the_torch_weight() {
        let (k, n, m) = (19, 37, 5);
        let w_torch = values(n * k, 5); // [n, k]
        let x = values(m * k, 6);
        for kernel in Kernel::available() {
            let packed = PackedB::linear(kernel, &w_torch, k, n);
            let mut y = vec![0f32; m * n];
            gemm(m, &x, k, &packed, &mut y, n, Init::Zero, 2);
            for i in 0..m {
                for j in 0..n {
                    let r = |v: f32| {
                        if kernel.is_bf16() {
                            bf16_to_f32(bf16_bits(v))
                        } else {
                            v
                        }
                    };
                    let want: f32 = (0..k)
                        .map(|p| r(x[i * k + p]) * r(w_torch[j * k + p]))
                        .sum();
                    assert!((y[i * n + j] - want).abs() < 1e-4, "{kernel:?}");
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even (1.0).
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
        assert_eq!(bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(bf16_to_f32(bf16_bits(-2.5)), -2.5);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }
}
