//! Hand-written f32 kernels for batch-of-8 training: dense forward, input gradient, and a fused
//! "weight gradient + Adam update + next batch's forward" pass over each weight row.
//!
//! Every kernel is `#[inline(always)]` and generic over `FMA` so that the entry points in
//! `train.rs`/`model.rs` can be compiled twice: once under `#[target_feature(enable =
//! "avx2,fma")]` (selected at run time) and once for the baseline target. Loops work on
//! fixed-size chunks of [`LANES`] floats with one accumulator per lane, which LLVM turns into
//! SIMD registers without needing fast-math reassociation.
//!
//! Rows are addressed by index into a row-major matrix (`x[row * dim..]`), so a mini-batch is
//! never copied out of the feature matrix. Row blocks are always [`BLOCK`] rows; callers pad a
//! partial block with a repeated row whose output gradient is zero.

/// SIMD chunk width in f32 lanes (one AVX2 register).
pub(crate) const LANES: usize = 8;
/// Rows processed together (register-blocked); the default batch size.
pub(crate) const BLOCK: usize = 8;

/// `a * b + c`, fused when the caller was compiled with FMA.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn chunk(x: &[f32], start: usize) -> &[f32; LANES] {
    x[start..start + LANES]
        .try_into()
        .expect("LANES-sized chunk")
}

/// Per-step Adam coefficients, computed as `torch.optim.Adam` does (bias corrections in f64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamCoef {
    pub beta2: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_bias_correction2_sqrt: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient (`grad += weight_decay * param`), 0 for none.
    pub weight_decay: f32,
}

impl AdamCoef {
    pub(crate) fn new(
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        step: u64,
    ) -> Self {
        let t = step as i32;
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2 = 1.0 - beta2.powi(t);
        Self {
            beta2: beta2 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            step_size: (lr / bias_correction1) as f32,
            inv_bias_correction2_sqrt: (1.0 / bias_correction2.sqrt()) as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
        }
    }
}

/// One Adam update of one parameter, following `torch.optim.adam._single_tensor_adam`:
/// `m.lerp_(g, 1-b1)`, `v.mul_(b2).addcmul_(g, g, 1-b2)`,
/// `p.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps, -lr / bc1)`.
#[inline(always)]
pub(crate) fn adam<const FMA: bool>(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, c: &AdamCoef) {
    let g = fmadd::<FMA>(c.weight_decay, *p, g);
    let mm = fmadd::<FMA>(c.one_minus_beta1, g - *m, *m);
    let vv = fmadd::<FMA>(c.one_minus_beta2, g * g, *v * c.beta2);
    let denom = fmadd::<FMA>(vv.sqrt(), c.inv_bias_correction2_sqrt, c.eps);
    *p = fmadd::<FMA>(-c.step_size, mm / denom, *p);
    *m = mm;
    *v = vv;
}

/// Dot products of one weight row with [`BLOCK`] input rows.
#[inline(always)]
fn dots<const FMA: bool>(
    w_row: &[f32],
    x: &[f32],
    dim: usize,
    rows: &[usize; BLOCK],
) -> [f32; BLOCK] {
    let mut acc = [[0.0_f32; LANES]; BLOCK];
    let body = dim / LANES * LANES;
    let mut i = 0;
    while i < body {
        let w = chunk(w_row, i);
        for r in 0..BLOCK {
            let xr = chunk(x, rows[r] * dim + i);
            for l in 0..LANES {
                acc[r][l] = fmadd::<FMA>(w[l], xr[l], acc[r][l]);
            }
        }
        i += LANES;
    }
    let mut out = [0.0_f32; BLOCK];
    for r in 0..BLOCK {
        let mut s = acc[r].iter().sum::<f32>();
        for j in body..dim {
            s = fmadd::<FMA>(w_row[j], x[rows[r] * dim + j], s);
        }
        out[r] = s;
    }
    out
}

/// `out[k * out_dim + o] = b[o] + W[o] · x[rows[k]]` for every `k` (rows.len() a multiple of
/// [`BLOCK`]); `w` is `[out_dim, in_dim]` row-major (PyTorch's layout).
#[inline(always)]
pub(crate) fn dense_forward<const FMA: bool>(
    w: &[f32],
    b: &[f32],
    in_dim: usize,
    x: &[f32],
    rows: &[usize],
    out: &mut [f32],
) {
    let out_dim = b.len();
    for (blk, block_rows) in rows.chunks_exact(BLOCK).enumerate() {
        let block_rows: &[usize; BLOCK] = block_rows.try_into().expect("BLOCK rows");
        for o in 0..out_dim {
            let d = dots::<FMA>(&w[o * in_dim..(o + 1) * in_dim], x, in_dim, block_rows);
            for r in 0..BLOCK {
                out[(blk * BLOCK + r) * out_dim + o] = d[r] + b[o];
            }
        }
    }
}

/// Input gradient `dx[k] = Σ_o dz[k][o] · W[o]` for `n_rows` rows (`dz` is `[n_rows, out_dim]`).
#[inline(always)]
pub(crate) fn dense_input_grad<const FMA: bool>(
    w: &[f32],
    in_dim: usize,
    out_dim: usize,
    dz: &[f32],
    n_rows: usize,
    dx: &mut [f32],
) {
    dx[..n_rows * in_dim].fill(0.0);
    for o in 0..out_dim {
        let w_row = &w[o * in_dim..(o + 1) * in_dim];
        for k in 0..n_rows {
            let s = dz[k * out_dim + o];
            if s == 0.0 {
                continue;
            }
            let dx_row = &mut dx[k * in_dim..(k + 1) * in_dim];
            for (d, &wv) in dx_row.iter_mut().zip(w_row) {
                *d = fmadd::<FMA>(s, wv, *d);
            }
        }
    }
}

/// Adam state of one dense layer.
#[derive(Debug, Clone)]
pub(crate) struct AdamBuffers {
    pub m_w: Vec<f32>,
    pub v_w: Vec<f32>,
    pub m_b: Vec<f32>,
    pub v_b: Vec<f32>,
}

impl AdamBuffers {
    pub(crate) fn zeros(in_dim: usize, out_dim: usize) -> Self {
        Self {
            m_w: vec![0.0; in_dim * out_dim],
            v_w: vec![0.0; in_dim * out_dim],
            m_b: vec![0.0; out_dim],
            v_b: vec![0.0; out_dim],
        }
    }
}

/// The next mini-batch's rows for a fused forward pass (exactly [`BLOCK`] rows, padded).
pub(crate) struct NextForward<'a> {
    pub x: &'a [f32],
    pub rows: &'a [usize; BLOCK],
    pub out: &'a mut [f32],
}

/// Fused per-row pass: `gW[o] = Σ_k dz[k][o] · x[rows[k]]`, Adam update of `W[o]` and `b[o]`
/// with that gradient (never stored), then, when `next` is given, the next batch's
/// pre-activation `W[o] · x_next + b[o]` with the updated row while it is still in cache.
///
/// `rows.len()` is a multiple of [`BLOCK`]; padded rows must have `dz == 0`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn dense_update<const FMA: bool>(
    w: &mut [f32],
    b: &mut [f32],
    st: &mut AdamBuffers,
    in_dim: usize,
    dz: &[f32],
    x: &[f32],
    rows: &[usize],
    coef: &AdamCoef,
    mut next: Option<NextForward<'_>>,
) {
    let out_dim = b.len();
    let n_blocks = rows.len() / BLOCK;
    let body = in_dim / LANES * LANES;
    for o in 0..out_dim {
        let w_row = &mut w[o * in_dim..(o + 1) * in_dim];
        let m_row = &mut st.m_w[o * in_dim..(o + 1) * in_dim];
        let v_row = &mut st.v_w[o * in_dim..(o + 1) * in_dim];
        let mut acc = [[0.0_f32; LANES]; BLOCK];
        let mut i = 0;
        while i < body {
            let mut g = [0.0_f32; LANES];
            for blk in 0..n_blocks {
                for r in 0..BLOCK {
                    let k = blk * BLOCK + r;
                    let s = dz[k * out_dim + o];
                    let xr = chunk(x, rows[k] * in_dim + i);
                    for l in 0..LANES {
                        g[l] = fmadd::<FMA>(s, xr[l], g[l]);
                    }
                }
            }
            let wc: &mut [f32; LANES] = (&mut w_row[i..i + LANES]).try_into().expect("chunk");
            let mc: &mut [f32; LANES] = (&mut m_row[i..i + LANES]).try_into().expect("chunk");
            let vc: &mut [f32; LANES] = (&mut v_row[i..i + LANES]).try_into().expect("chunk");
            for l in 0..LANES {
                adam::<FMA>(&mut wc[l], &mut mc[l], &mut vc[l], g[l], coef);
            }
            if let Some(nf) = next.as_ref() {
                for r in 0..BLOCK {
                    let xr = chunk(nf.x, nf.rows[r] * in_dim + i);
                    for l in 0..LANES {
                        acc[r][l] = fmadd::<FMA>(wc[l], xr[l], acc[r][l]);
                    }
                }
            }
            i += LANES;
        }
        let mut tail = [0.0_f32; BLOCK];
        for j in body..in_dim {
            let mut g = 0.0_f32;
            for (k, &row) in rows.iter().enumerate() {
                g = fmadd::<FMA>(dz[k * out_dim + o], x[row * in_dim + j], g);
            }
            adam::<FMA>(&mut w_row[j], &mut m_row[j], &mut v_row[j], g, coef);
            if let Some(nf) = next.as_ref() {
                for r in 0..BLOCK {
                    tail[r] = fmadd::<FMA>(w_row[j], nf.x[nf.rows[r] * in_dim + j], tail[r]);
                }
            }
        }
        let mut gb = 0.0_f32;
        for k in 0..rows.len() {
            gb += dz[k * out_dim + o];
        }
        adam::<FMA>(&mut b[o], &mut st.m_b[o], &mut st.v_b[o], gb, coef);
        if let Some(nf) = next.as_mut() {
            for r in 0..BLOCK {
                nf.out[r * out_dim + o] = acc[r].iter().sum::<f32>() + tail[r] + b[o];
            }
        }
    }
}

/// Softmax cross-entropy over `n_rows` rows of `logits` (`[rows, n_classes]`): writes
/// `dz = (softmax - onehot) / n_rows` (the gradient of the batch-mean loss) for the real rows,
/// zero for padded rows up to `padded_rows`, and returns the mean loss.
#[inline(always)]
pub(crate) fn cross_entropy_grad(
    logits: &[f32],
    n_classes: usize,
    labels: &[usize],
    padded_rows: usize,
    dz: &mut [f32],
) -> f32 {
    let n_rows = labels.len();
    let inv_n = 1.0 / n_rows as f32;
    let mut loss = 0.0_f32;
    for (k, &y) in labels.iter().enumerate() {
        let z = &logits[k * n_classes..(k + 1) * n_classes];
        let d = &mut dz[k * n_classes..(k + 1) * n_classes];
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0_f32;
        for (dj, &zj) in d.iter_mut().zip(z) {
            *dj = (zj - max).exp();
            sum += *dj;
        }
        loss += sum.ln() + max - z[y];
        let scale = inv_n / sum;
        for dj in d.iter_mut() {
            *dj *= scale;
        }
        d[y] -= inv_n;
    }
    dz[n_rows * n_classes..padded_rows * n_classes].fill(0.0);
    loss * inv_n
}

/// Whether the AVX2 + FMA code path can run on this CPU.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_by_lr() {
        // After one step m/(sqrt(v)) == sign(g) once bias-corrected: |dp| ~= lr.
        let c = AdamCoef::new(1e-3, 0.9, 0.999, 1e-8, 0.0, 1);
        let (mut p, mut m, mut v) = (0.5_f32, 0.0, 0.0);
        adam::<false>(&mut p, &mut m, &mut v, 2.0, &c);
        assert!((p - (0.5 - 1e-3)).abs() < 1e-7, "{p}");
        assert!((m - 0.2).abs() < 1e-7 && (v - 0.004).abs() < 1e-8);
    }

    #[test]
    fn fused_update_equals_separate_passes() {
        let (in_dim, out_dim) = (13, 3); // not a multiple of LANES: exercises the tail
        let w0: Vec<f32> = (0..in_dim * out_dim)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let b0 = vec![0.1_f32, -0.2, 0.3];
        let x: Vec<f32> = (0..10 * in_dim).map(|i| (i as f32 * 0.11).cos()).collect();
        let rows = [1usize, 4, 2, 9, 0, 0, 0, 0];
        let mut dz = vec![0.0_f32; BLOCK * out_dim];
        for (k, d) in dz.iter_mut().enumerate().take(4 * out_dim) {
            *d = (k as f32 * 0.7).sin();
        }
        let coef = AdamCoef::new(1e-2, 0.9, 0.999, 1e-8, 0.01, 3);
        let next_rows = [3usize, 5, 6, 7, 8, 3, 3, 3];

        let (mut w, mut b, mut st) = (w0.clone(), b0.clone(), AdamBuffers::zeros(in_dim, out_dim));
        let mut fused_out = vec![0.0_f32; BLOCK * out_dim];
        dense_update::<false>(
            &mut w,
            &mut b,
            &mut st,
            in_dim,
            &dz,
            &x,
            &rows,
            &coef,
            Some(NextForward {
                x: &x,
                rows: &next_rows,
                out: &mut fused_out,
            }),
        );

        // Reference: explicit gradient, then Adam, then forward.
        let (mut w2, mut b2, mut st2) = (w0, b0, AdamBuffers::zeros(in_dim, out_dim));
        for o in 0..out_dim {
            for j in 0..in_dim {
                let g: f32 = (0..BLOCK)
                    .map(|k| dz[k * out_dim + o] * x[rows[k] * in_dim + j])
                    .sum();
                let idx = o * in_dim + j;
                adam::<false>(&mut w2[idx], &mut st2.m_w[idx], &mut st2.v_w[idx], g, &coef);
            }
            let gb: f32 = (0..BLOCK).map(|k| dz[k * out_dim + o]).sum();
            adam::<false>(&mut b2[o], &mut st2.m_b[o], &mut st2.v_b[o], gb, &coef);
        }
        let mut ref_out = vec![0.0_f32; BLOCK * out_dim];
        dense_forward::<false>(&w2, &b2, in_dim, &x, &next_rows, &mut ref_out);
        for (a, r) in w.iter().zip(&w2) {
            assert!((a - r).abs() < 1e-6, "{a} vs {r}");
        }
        for (a, r) in fused_out.iter().zip(&ref_out) {
            assert!((a - r).abs() < 1e-5, "{a} vs {r}");
        }
    }

    #[test]
    fn cross_entropy_matches_log_softmax() {
        let logits = [1.0_f32, 2.0, 0.5, -1.0, 0.0, 3.0];
        let mut dz = vec![9.0_f32; 3 * 3];
        let loss = cross_entropy_grad(&logits, 3, &[1, 2], 3, &mut dz);
        let lse = |z: &[f32]| z.iter().map(|v| v.exp()).sum::<f32>().ln();
        let want = ((lse(&logits[..3]) - 2.0) + (lse(&logits[3..]) - 3.0)) / 2.0;
        assert!((loss - want).abs() < 1e-6);
        // Gradient rows sum to zero; padded row is zeroed.
        assert!(dz[..3].iter().sum::<f32>().abs() < 1e-6);
        assert_eq!(&dz[6..], &[0.0, 0.0, 0.0]);
    }
}
