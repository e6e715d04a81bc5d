//! The CPU side of a step, in f32 over the kernels' channel-first `[C, S]` layout (element
//! `(c, t)` at `c * S + t`): RMSNorm and its backward, RoPE backward, the SwiGLU derivative,
//! GQA tiling, the embedding, the classifier with cross-entropy, and the matrix products the
//! CPU computes (the dW products, and every product of the [`reference`](crate::backend)
//! backend).
//!
//! Reductions run in a fixed order (sums of squares and softmax denominators in f64), so results
//! do not depend on threads.
use milbridge_linalg::cpu::selected_isa;
use milbridge_linalg::ew;
use milbridge_linalg::gemm::{GemmSpec, Precision, SliceLayout, gemm_f32};
use milbridge_linalg::pool::Pool;

use crate::par;

/// RMSNorm epsilon (llama2.c and training_dynamic use 1e-5).
pub const NORM_EPS: f64 = 1e-5;

/// Epsilon of Qwen3's per-head q/k RMSNorm (Qwen3's `rms_norm_eps`, 1e-6; the graphs kernels
/// get it as `ModelConfig::norm_eps`, see [`crate::kernels::graphs_config`]).
pub const QK_NORM_EPS: f64 = 1e-6;

/// RoPE base frequency.
pub const ROPE_THETA: f64 = 10000.0;

/// `out[c, t] = x[c, t] * w[c] / sqrt(mean_c x[c, t]^2 + eps)`, on linalg's tiered
/// channel-first RMSNorm (f32 sums; within `1e-5` relative of exact).
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], seq: usize, eps: f64) {
    ew::rmsnorm_channels(selected_isa(), x, w, seq, eps as f32, out);
}

fn inv_rms_eps(x: &[f32], dim: usize, seq: usize, eps: f64) -> Vec<f64> {
    let mut ss = vec![0.0f64; seq];
    for c in 0..dim {
        for t in 0..seq {
            let v = f64::from(x[c * seq + t]);
            ss[t] += v * v;
        }
    }
    ss.iter()
        .map(|s| 1.0 / (s / dim as f64 + eps).sqrt())
        .collect()
}

/// Qwen3's per-head RMSNorm: `x` is `[heads*hd, S]` and each head's `[hd, S]` block is
/// normalised over its `hd` channels with the shared gain `w` (`[hd]`):
/// `out[h*hd + c, t] = x[h*hd + c, t] * w[c] / sqrt(mean_c x[h*hd + c, t]^2 + eps)`.
pub fn head_rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], seq: usize, eps: f64) {
    let block = w.len() * seq;
    debug_assert_eq!(x.len() % block, 0);
    for (o, xh) in out.chunks_mut(block).zip(x.chunks(block)) {
        let inv = inv_rms_eps(xh, w.len(), seq, eps);
        for (c, wc) in w.iter().enumerate() {
            for t in 0..seq {
                o[c * seq + t] = (f64::from(xh[c * seq + t]) * inv[t] * f64::from(*wc)) as f32;
            }
        }
    }
}

/// Backward of [`head_rmsnorm`] with respect to its input: from `dy` (gradient of the
/// normalised heads) writes `dx`, per head the [`rmsnorm_bwd`] formula over `hd`.
pub fn head_rmsnorm_bwd(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], seq: usize, eps: f64) {
    let (hd, block) = (w.len(), w.len() * seq);
    for ((dxh, dyh), xh) in dx
        .chunks_mut(block)
        .zip(dy.chunks(block))
        .zip(x.chunks(block))
    {
        let inv = inv_rms_eps(xh, hd, seq, eps);
        let mut dot = vec![0.0f64; seq];
        for (c, wc) in w.iter().enumerate() {
            for (t, d) in dot.iter_mut().enumerate() {
                let i = c * seq + t;
                *d += f64::from(dyh[i]) * f64::from(*wc) * f64::from(xh[i]);
            }
        }
        for (c, wc) in w.iter().enumerate() {
            for (t, (&r, &dt)) in inv.iter().zip(&dot).enumerate() {
                let i = c * seq + t;
                let (xv, dyv) = (f64::from(xh[i]), f64::from(dyh[i]));
                dxh[i] = (f64::from(*wc) * r * dyv - xv * r * r * r * dt / hd as f64) as f32;
            }
        }
    }
}

/// The gain gradient of [`head_rmsnorm`]: `dw[c] += Σ_heads Σ_t dy[h*hd + c, t] x[h*hd + c, t]
/// r[h, t]` with `r` the head's inverse RMS (summed over every head that shares the gain).
pub fn head_rmsnorm_gain_bwd(dw: &mut [f32], dy: &[f32], x: &[f32], seq: usize, eps: f64) {
    let (hd, block) = (dw.len(), dw.len() * seq);
    let mut acc = vec![0.0f64; hd];
    for (dyh, xh) in dy.chunks(block).zip(x.chunks(block)) {
        let inv = inv_rms_eps(xh, hd, seq, eps);
        for (c, a) in acc.iter_mut().enumerate() {
            for (t, &r) in inv.iter().enumerate() {
                let i = c * seq + t;
                *a += f64::from(dyh[i]) * f64::from(xh[i]) * r;
            }
        }
    }
    for (d, a) in dw.iter_mut().zip(&acc) {
        *d += *a as f32;
    }
}

/// Backward of [`rmsnorm`]: writes `dx` and adds the gain gradient into `dw`.
///
/// With `r = 1/rms(x)`: `dx[c] = w[c] r dy[c] - x[c] r^3 / D * sum_j dy[j] w[j] x[j]`,
/// `dw[c] += sum_t dy[c, t] x[c, t] r[t]` (linalg's tiered kernel).
pub fn rmsnorm_bwd(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    seq: usize,
    eps: f64,
) {
    ew::rmsnorm_channels_backward(selected_isa(), x, w, dy, seq, eps as f32, dx, dw);
}

/// `cos`/`sin` of RoPE angle `pos * theta^(-2i/head_dim)` for pair `i`, Llama's base
/// [`ROPE_THETA`] (what llama2.c's run.c uses).
pub fn rope_angle(pos: usize, pair: usize, head_dim: usize) -> (f64, f64) {
    rope_angle_with(ROPE_THETA, pos, pair, head_dim)
}

/// [`rope_angle`] with base `theta` (Qwen3: 1e6).
pub fn rope_angle_with(theta: f64, pos: usize, pair: usize, head_dim: usize) -> (f64, f64) {
    let freq = theta.powf(-2.0 * pair as f64 / head_dim as f64);
    let angle = pos as f64 * freq;
    (angle.cos(), angle.sin())
}

/// Rotates adjacent pairs `(2i, 2i+1)` of every head of `x` (`[heads*head_dim, S]`) forward
/// (`inverse == false`) or backward (the transpose rotation, which is the RoPE backward).
pub fn rope(x: &mut [f32], head_dim: usize, seq: usize, theta: f64, inverse: bool) {
    let heads = x.len() / (head_dim * seq);
    let pairs = head_dim / 2;
    let table: Vec<(f64, f64)> = (0..pairs * seq)
        .map(|idx| rope_angle_with(theta, idx % seq, idx / seq, head_dim))
        .collect();
    for h in 0..heads {
        for i in 0..pairs {
            let (r0, r1) = (
                (h * head_dim + 2 * i) * seq,
                (h * head_dim + 2 * i + 1) * seq,
            );
            for t in 0..seq {
                let (cos, sin) = table[i * seq + t];
                let sin = if inverse { -sin } else { sin };
                let (a, b) = (f64::from(x[r0 + t]), f64::from(x[r1 + t]));
                x[r0 + t] = (a * cos - b * sin) as f32;
                x[r1 + t] = (a * sin + b * cos) as f32;
            }
        }
    }
}

/// Repeats each of the `kv_heads` heads of `kv` (`[kv_heads*head_dim, S]`) `heads/kv_heads`
/// times, giving `[heads*head_dim, S]` (head `h` reads kv head `h / ratio`).
pub fn gqa_tile(out: &mut [f32], kv: &[f32], heads: usize, kv_heads: usize, head_dim: usize) {
    let per = kv.len() / kv_heads;
    let ratio = heads / kv_heads;
    for h in 0..heads {
        let g = h / ratio;
        out[h * per..(h + 1) * per].copy_from_slice(&kv[g * per..(g + 1) * per]);
    }
    debug_assert_eq!(out.len(), per * heads, "{head_dim}");
}

/// Sums the `heads/kv_heads` query-head copies of a gradient back onto each kv head.
pub fn gqa_reduce(out: &mut [f32], full: &[f32], heads: usize, kv_heads: usize) {
    let per = full.len() / heads;
    let ratio = heads / kv_heads;
    out.fill(0.0);
    for h in 0..heads {
        let g = h / ratio;
        for (o, f) in out[g * per..(g + 1) * per]
            .iter_mut()
            .zip(&full[h * per..(h + 1) * per])
        {
            *o += *f;
        }
    }
}

/// SwiGLU backward: from `dgate = d(silu(h1) * h3)` give `dh1` and `dh3` (linalg's tiered
/// kernel, split over the CPU's threads).
pub fn swiglu_bwd(dh1: &mut [f32], dh3: &mut [f32], dgate: &[f32], h1: &[f32], h3: &[f32]) {
    let isa = selected_isa();
    let per = dgate.len().div_ceil(par::threads()).max(1 << 14);
    let chunks: Vec<_> = dh1
        .chunks_mut(per)
        .zip(dh3.chunks_mut(per))
        .zip(dgate.chunks(per))
        .zip(h1.chunks(per))
        .zip(h3.chunks(per))
        .collect();
    par::map(chunks, |((((d1, d3), g), a), u)| {
        ew::swiglu_backward(isa, a, u, g, d1, d3);
    });
}

/// `silu(h1) * h3` elementwise, with `h1`, `h3` and the gate written out.
pub fn swiglu(gate: &mut [f32], h1: &[f32], h3: &[f32]) {
    for i in 0..gate.len() {
        let a = f64::from(h1[i]);
        gate[i] = (a / (1.0 + (-a).exp()) * f64::from(h3[i])) as f32;
    }
}

/// `x[c, t] = embed[tokens[t], c]` (embedding rows are `dim` long).
pub fn embed(x: &mut [f32], table: &[f32], tokens: &[u16], dim: usize) {
    let seq = tokens.len();
    for (t, &tok) in tokens.iter().enumerate() {
        let row = &table[usize::from(tok) * dim..(usize::from(tok) + 1) * dim];
        for c in 0..dim {
            x[c * seq + t] = row[c];
        }
    }
}

/// Adds `dx[:, t]` into embedding row `tokens[t]`.
pub fn embed_bwd(dtable: &mut [f32], dx: &[f32], tokens: &[u16], dim: usize) {
    let seq = tokens.len();
    for (t, &tok) in tokens.iter().enumerate() {
        let row = &mut dtable[usize::from(tok) * dim..(usize::from(tok) + 1) * dim];
        for c in 0..dim {
            row[c] += dx[c * seq + t];
        }
    }
}

/// Vocabulary rows per cross-entropy chunk: the unit of parallel work and of the fixed-order
/// reduction (chunk boundaries do not depend on the thread count, so neither do the bits).
const CE_ROWS: usize = 512;

/// `e^x` in f32 for `x <= 0` (softmax arguments after the max shift), vectorisable: range
/// reduction by `ln 2` and a degree-7 Taylor polynomial on `|r| <= ln2/2` (relative error
/// below 2⁻²³, i.e. within about one f32 ulp of the correctly rounded value); results below
/// `e^-87` flush to zero.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.max(-87.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// Softmax cross-entropy over `logits` (`[V, S]`): returns the mean loss over positions and
/// writes `dlogits = (softmax - onehot(target)) * grad_scale / S`.
///
/// Three sweeps over rows (column maxima, exponentials with per-column sums, normalisation),
/// each streaming the `[V, S]` tensor in memory order and split over row chunks across the
/// CPU's threads; exponentials in f32 (about one ulp), column sums in f64 per chunk, chunks
/// combined in a fixed order.
pub fn cross_entropy(
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[u16],
    vocab: usize,
    grad_scale: f32,
) -> f32 {
    let seq = targets.len();
    assert!(
        logits.len() == vocab * seq && dlogits.len() == vocab * seq,
        "invariant: logits and dlogits are [vocab, seq]"
    );
    // Column maxima, per chunk of rows.
    let chunks: Vec<&[f32]> = logits.chunks(CE_ROWS * seq).collect();
    let maxima = par::map(chunks, |rows| {
        let mut max = vec![f32::NEG_INFINITY; seq];
        for row in rows.chunks_exact(seq) {
            for (m, &x) in max.iter_mut().zip(row) {
                *m = m.max(x);
            }
        }
        max
    });
    let mut max = vec![f32::NEG_INFINITY; seq];
    for part in &maxima {
        for (m, &x) in max.iter_mut().zip(part) {
            *m = m.max(x);
        }
    }
    // Exponentials into dlogits, column sums per chunk.
    let chunks: Vec<(&mut [f32], &[f32])> = dlogits
        .chunks_mut(CE_ROWS * seq)
        .zip(logits.chunks(CE_ROWS * seq))
        .collect();
    let sums = par::map(chunks, |(out, rows)| {
        let mut sum = vec![0.0f64; seq];
        let mut lane = vec![0.0f32; seq];
        for (local, (o_row, x_row)) in out
            .chunks_exact_mut(seq)
            .zip(rows.chunks_exact(seq))
            .enumerate()
        {
            for ((o, &x), (l, &m)) in o_row.iter_mut().zip(x_row).zip(lane.iter_mut().zip(&max)) {
                *o = exp_neg(x - m);
                *l += *o;
            }
            if local % 64 == 63 {
                for (s, l) in sum.iter_mut().zip(lane.iter_mut()) {
                    *s += f64::from(*l);
                    *l = 0.0;
                }
            }
        }
        for (s, l) in sum.iter_mut().zip(&lane) {
            *s += f64::from(*l);
        }
        sum
    });
    let mut total = vec![0.0f64; seq];
    for part in &sums {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    let k = f64::from(grad_scale) / seq as f64;
    let factor: Vec<f32> = total.iter().map(|&s| (k / s) as f32).collect();
    let mut loss = 0.0f64;
    for (t, &target) in targets.iter().enumerate() {
        let target = usize::from(target);
        assert!(
            target < vocab,
            "invariant: targets are below the vocabulary size"
        );
        let x = f64::from(logits[target * seq + t]) - f64::from(max[t]);
        loss += total[t].ln() - x;
    }
    // Normalise and subtract the one-hot.
    let chunks: Vec<&mut [f32]> = dlogits.chunks_mut(CE_ROWS * seq).collect();
    par::map(chunks, |out| {
        for row in out.chunks_exact_mut(seq) {
            for (o, &f) in row.iter_mut().zip(&factor) {
                *o *= f;
            }
        }
    });
    for (t, &target) in targets.iter().enumerate() {
        dlogits[usize::from(target) * seq + t] -= k as f32;
    }
    (loss / seq as f64) as f32
}

/// `C (m×n) (+)= A (m×k) · B (k×n)`, all row-major, on linalg's GEMM (selected tier, exact
/// f32 precision, the global pool).
pub fn matmul_nn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, acc: bool) {
    check(c.len(), m * n, a.len(), m * k, b.len(), k * n);
    gemm(
        Precision::Exact,
        c,
        a,
        SliceLayout::Plain,
        b,
        SliceLayout::Plain,
        (m, n, k),
        acc,
    );
}

/// `C (m×n) (+)= Aᵀ · B` with `A` stored `k×m` and `B` `k×n`, all row-major.
pub fn matmul_tn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, acc: bool) {
    check(c.len(), m * n, a.len(), k * m, b.len(), k * n);
    gemm(
        Precision::Exact,
        c,
        a,
        SliceLayout::Transposed,
        b,
        SliceLayout::Plain,
        (m, n, k),
        acc,
    );
}

/// `C (m×n) (+)= A · Bᵀ` with `A` stored `m×k` and `B` `n×k`, all row-major (the dW form
/// `dW += dY · Xᵀ` over the sequence).
pub fn matmul_nt(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, acc: bool) {
    matmul_nt_with(false, c, a, b, (m, n, k), acc);
}

/// `C (m×n) (+)= A · Bᵀ` like [`matmul_nt`], in linalg's fast profile when `fast` (AMX bf16
/// tiles with f32 accumulation where the host has them: operands rounded to bf16, bound about
/// 2⁻⁸·Σ|a||b|; elsewhere the same as exact).
pub fn matmul_nt_with(
    fast: bool,
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    acc: bool,
) {
    check(c.len(), m * n, a.len(), m * k, b.len(), n * k);
    let precision = if fast {
        Precision::Fast
    } else {
        Precision::Exact
    };
    gemm(
        precision,
        c,
        a,
        SliceLayout::Plain,
        b,
        SliceLayout::Transposed,
        (m, n, k),
        acc,
    );
}

#[allow(
    clippy::too_many_arguments,
    reason = "a BLAS-style call: precision, operands with their layouts, sizes"
)]
fn gemm(
    precision: Precision,
    c: &mut [f32],
    a: &[f32],
    a_layout: SliceLayout,
    b: &[f32],
    b_layout: SliceLayout,
    mnk: (usize, usize, usize),
    acc: bool,
) {
    let spec = GemmSpec {
        isa: selected_isa(),
        precision,
        accumulate: acc,
    };
    gemm_f32(&spec, Pool::global(), mnk, a, a_layout, b, b_layout, c);
}

/// Dot product with eight independent partial sums (vectorisable, fixed order).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = a.len() / 8;
    for ch in 0..chunks {
        for l in 0..8 {
            lanes[l] += a[ch * 8 + l] * b[ch * 8 + l];
        }
    }
    let mut s = 0.0f32;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    let pairs = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    s + (pairs[0] + pairs[2]) + (pairs[1] + pairs[3])
}

fn check(c: usize, ce: usize, a: usize, ae: usize, b: usize, be: usize) {
    assert!(
        c == ce && a == ae && b == be,
        "invariant: matmul operand lengths match their shapes (c {c}/{ce}, a {a}/{ae}, b {b}/{be})"
    );
}

/// Causal attention, forward, for every query head: `q` is `[heads*hd, S]` (after RoPE), `k`
/// and `v` are `[kv_heads*hd, S]`; writes `out` (`[heads*hd, S]`).
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    seq: usize,
) {
    let hd = q.len() / (heads * seq);
    let scale = 1.0 / (hd as f64).sqrt();
    let ratio = heads / kv_heads;
    let mut p = vec![0.0f64; seq];
    for h in 0..heads {
        let g = h / ratio;
        for t in 0..seq {
            probs_row(&mut p, q, k, h, g, t, hd, seq, scale);
            for d in 0..hd {
                let vrow = &v[(g * hd + d) * seq..];
                let mut acc = 0.0f64;
                for u in 0..=t {
                    acc += p[u] * f64::from(vrow[u]);
                }
                out[(h * hd + d) * seq + t] = acc as f32;
            }
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the attention geometry is six numbers"
)]
fn probs_row(
    p: &mut [f64],
    q: &[f32],
    k: &[f32],
    h: usize,
    g: usize,
    t: usize,
    hd: usize,
    seq: usize,
    scale: f64,
) {
    let mut max = f64::NEG_INFINITY;
    for u in 0..=t {
        let mut s = 0.0f64;
        for d in 0..hd {
            s += f64::from(q[(h * hd + d) * seq + t]) * f64::from(k[(g * hd + d) * seq + u]);
        }
        p[u] = s * scale;
        max = max.max(p[u]);
    }
    let mut sum = 0.0;
    for pu in p.iter_mut().take(t + 1) {
        *pu = (*pu - max).exp();
        sum += *pu;
    }
    for pu in p.iter_mut().take(t + 1) {
        *pu /= sum;
    }
}

/// Causal attention, backward: from `dout` (`[heads*hd, S]`) give `dq` (`[heads*hd, S]`) and
/// `dk`, `dv` (`[kv_heads*hd, S]`, summed over the query heads sharing each kv head).
#[allow(
    clippy::too_many_arguments,
    reason = "three inputs, three outputs and the geometry"
)]
pub fn attention_bwd(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    seq: usize,
) {
    let hd = q.len() / (heads * seq);
    let scale = 1.0 / (hd as f64).sqrt();
    let ratio = heads / kv_heads;
    let mut dk64 = vec![0.0f64; dk.len()];
    let mut dv64 = vec![0.0f64; dv.len()];
    let mut p = vec![0.0f64; seq];
    let mut dp = vec![0.0f64; seq];
    for h in 0..heads {
        let g = h / ratio;
        for t in 0..seq {
            probs_row(&mut p, q, k, h, g, t, hd, seq, scale);
            let mut pdp = 0.0;
            for u in 0..=t {
                let mut s = 0.0;
                for d in 0..hd {
                    s += f64::from(dout[(h * hd + d) * seq + t])
                        * f64::from(v[(g * hd + d) * seq + u]);
                }
                dp[u] = s;
                pdp += p[u] * s;
            }
            for d in 0..hd {
                let dov = f64::from(dout[(h * hd + d) * seq + t]);
                for u in 0..=t {
                    dv64[(g * hd + d) * seq + u] += p[u] * dov;
                }
            }
            for d in 0..hd {
                let mut acc = 0.0;
                for u in 0..=t {
                    let ds = p[u] * (dp[u] - pdp) * scale;
                    acc += ds * f64::from(k[(g * hd + d) * seq + u]);
                    dk64[(g * hd + d) * seq + u] += ds * f64::from(q[(h * hd + d) * seq + t]);
                }
                dq[(h * hd + d) * seq + t] = acc as f32;
            }
        }
    }
    for (o, v) in dk.iter_mut().zip(&dk64) {
        *o = *v as f32;
    }
    for (o, v) in dv.iter_mut().zip(&dv64) {
        *o = *v as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn matmul_forms_agree_with_the_definition() {
        let mut rng = Rng::new(1);
        let (m, n, k) = (5, 7, 11);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        let mut c = vec![1.0f32; m * n];
        matmul_nn(&mut c, &a, &b, m, n, k, false);
        close(&c, &want, 1e-5);
        // Aᵀ stored k×m
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        matmul_tn(&mut c, &at, &b, m, n, k, false);
        close(&c, &want, 1e-5);
        // Bᵀ stored n×k
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul_nt(&mut c, &a, &bt, m, n, k, false);
        close(&c, &want, 1e-5);
        matmul_nt(&mut c, &a, &bt, m, n, k, true);
        let doubled: Vec<f32> = want.iter().map(|w| 2.0 * w).collect();
        close(&c, &doubled, 1e-5);
    }

    fn close(got: &[f32], want: &[f32], tol: f32) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "[{i}] {g} vs {w}");
        }
    }

    /// Central difference of `f` along every coordinate of `x`, compared with `grad`.
    fn fd_check(x: &mut [f32], grad: &[f32], f: &mut dyn FnMut(&[f32]) -> f64, tol: f64) {
        let h = 1e-3f32;
        for i in 0..x.len() {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(x);
            x[i] = orig - h;
            let down = f(x);
            x[i] = orig;
            let num = (up - down) / (2.0 * f64::from(h));
            let ana = f64::from(grad[i]);
            assert!(
                (num - ana).abs() <= tol * (1.0 + num.abs()),
                "[{i}] fd {num} vs {ana}"
            );
        }
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let mut rng = Rng::new(2);
        let (dim, seq) = (6, 3);
        let mut x = random(dim * seq, &mut rng);
        let w = random(dim, &mut rng);
        let r = random(dim * seq, &mut rng); // loss = <r, rmsnorm(x)>
        let mut dx = vec![0.0; dim * seq];
        let mut dw = vec![0.0; dim];
        rmsnorm_bwd(&mut dx, &mut dw, &r, &x, &w, seq, NORM_EPS);
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; dim * seq];
            rmsnorm(&mut y, x, w, seq, NORM_EPS);
            y.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>()
        };
        fd_check(&mut x.clone(), &dx, &mut |xx| loss(xx, &w), 2e-3);
        fd_check(&mut w.clone(), &dw, &mut |ww| loss(&x, ww), 2e-3);
        x[0] = 0.0; // keep clippy quiet about the clone
    }

    #[test]
    fn head_rmsnorm_backward_matches_finite_differences() {
        let mut rng = Rng::new(12);
        let (heads, hd, seq) = (3, 4, 5);
        let x = random(heads * hd * seq, &mut rng);
        let w = random(hd, &mut rng);
        let r = random(heads * hd * seq, &mut rng); // loss = <r, head_rmsnorm(x)>
        let eps = QK_NORM_EPS;
        let mut dx = vec![0.0; x.len()];
        head_rmsnorm_bwd(&mut dx, &r, &x, &w, seq, eps);
        let mut dw = vec![0.5; hd];
        head_rmsnorm_gain_bwd(&mut dw, &r, &x, seq, eps);
        for g in &mut dw {
            *g -= 0.5; // it accumulates
        }
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; x.len()];
            head_rmsnorm(&mut y, x, w, seq, eps);
            y.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>()
        };
        fd_check(&mut x.clone(), &dx, &mut |xx| loss(xx, &w), 2e-3);
        fd_check(&mut w.clone(), &dw, &mut |ww| loss(&x, ww), 2e-3);
        // each head is normalised on its own: scaling one head leaves the output unchanged
        let mut y0 = vec![0.0; x.len()];
        head_rmsnorm(&mut y0, &x, &w, seq, eps);
        let mut xs = x.clone();
        for v in &mut xs[hd * seq..2 * hd * seq] {
            *v *= 3.0;
        }
        let mut y1 = vec![0.0; x.len()];
        head_rmsnorm(&mut y1, &xs, &w, seq, eps);
        close(&y1, &y0, 1e-5);
        // and with one head of width dim it is rmsnorm (at its own epsilon)
        let mut a = vec![0.0; hd * seq];
        let mut b = vec![0.0; hd * seq];
        head_rmsnorm(&mut a, &x[..hd * seq], &w, seq, NORM_EPS);
        rmsnorm(&mut b, &x[..hd * seq], &w, seq, NORM_EPS);
        close(&a, &b, 1e-5);
    }

    #[test]
    fn rope_inverse_undoes_rope_and_position_zero_is_identity() {
        let mut rng = Rng::new(3);
        let (hd, seq) = (8, 5);
        let x = random(2 * hd * seq, &mut rng);
        let mut y = x.clone();
        rope(&mut y, hd, seq, ROPE_THETA, false);
        for c in 0..2 * hd {
            assert_eq!(y[c * seq], x[c * seq], "position 0 rotates by 0");
        }
        assert!((y[seq + 1] - x[seq + 1]).abs() > 1e-4, "position 1 rotates");
        rope(&mut y, hd, seq, ROPE_THETA, true);
        close(&y, &x, 1e-6);
    }

    #[test]
    fn attention_backward_matches_finite_differences_with_gqa() {
        let mut rng = Rng::new(4);
        let (heads, kv_heads, hd, seq) = (4, 2, 3, 5);
        let q = random(heads * hd * seq, &mut rng);
        let k = random(kv_heads * hd * seq, &mut rng);
        let v = random(kv_heads * hd * seq, &mut rng);
        let r = random(heads * hd * seq, &mut rng);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| {
            let mut out = vec![0.0; heads * hd * seq];
            attention(&mut out, q, k, v, heads, kv_heads, seq);
            out.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>()
        };
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_bwd(
            &mut dq, &mut dk, &mut dv, &r, &q, &k, &v, heads, kv_heads, seq,
        );
        fd_check(&mut q.clone(), &dq, &mut |x| loss(x, &k, &v), 3e-3);
        fd_check(&mut k.clone(), &dk, &mut |x| loss(&q, x, &v), 3e-3);
        fd_check(&mut v.clone(), &dv, &mut |x| loss(&q, &k, x), 3e-3);
        // causality: the output at position 0 depends only on position 0
        let mut out = vec![0.0; heads * hd * seq];
        attention(&mut out, &q, &k, &v, heads, kv_heads, seq);
        assert!((out[0] - v[0]).abs() < 1e-6);
    }

    #[test]
    fn swiglu_and_cross_entropy_backward_match_finite_differences() {
        let mut rng = Rng::new(5);
        let n = 7;
        let h1 = random(n, &mut rng);
        let h3 = random(n, &mut rng);
        let r = random(n, &mut rng);
        let (mut d1, mut d3) = (vec![0.0; n], vec![0.0; n]);
        swiglu_bwd(&mut d1, &mut d3, &r, &h1, &h3);
        let loss = |a: &[f32], b: &[f32]| {
            let mut g = vec![0.0; n];
            swiglu(&mut g, a, b);
            g.iter()
                .zip(&r)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>()
        };
        fd_check(&mut h1.clone(), &d1, &mut |x| loss(x, &h3), 2e-3);
        fd_check(&mut h3.clone(), &d3, &mut |x| loss(&h1, x), 2e-3);

        let (vocab, seq) = (9, 4);
        let logits = random(vocab * seq, &mut rng);
        let targets = [1u16, 8, 0, 3];
        let mut dl = vec![0.0; vocab * seq];
        let l = cross_entropy(&mut dl, &logits, &targets, vocab, 1.0);
        assert!(l > 0.0);
        let mut scratch = vec![0.0; vocab * seq];
        fd_check(
            &mut logits.clone(),
            &dl,
            &mut |x| f64::from(cross_entropy(&mut scratch, x, &targets, vocab, 1.0)),
            5e-3,
        );
        // uniform logits give ln(vocab)
        let l0 = cross_entropy(&mut dl, &vec![0.0; vocab * seq], &targets, vocab, 1.0);
        assert!((l0 - (vocab as f32).ln()).abs() < 1e-6);
    }

    #[test]
    fn gqa_tile_and_reduce_are_adjoint() {
        let kv = [1.0f32, 2.0, 3.0, 4.0]; // 2 kv heads × (hd·S = 2)
        let mut tiled = [0.0f32; 8];
        gqa_tile(&mut tiled, &kv, 4, 2, 1);
        assert_eq!(tiled, [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
        let mut red = [0.0f32; 4];
        gqa_reduce(&mut red, &tiled, 4, 2);
        assert_eq!(red, [2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn embedding_round_trip() {
        let table: Vec<f32> = (0..12).map(|i| i as f32).collect(); // vocab 4, dim 3
        let mut x = vec![0.0; 3 * 2];
        embed(&mut x, &table, &[2, 0], 3);
        assert_eq!(x, [6.0, 0.0, 7.0, 1.0, 8.0, 2.0]);
        let mut d = vec![0.0; 12];
        embed_bwd(&mut d, &x, &[2, 2], 3);
        assert_eq!(&d[6..9], &[6.0, 8.0, 10.0]);
    }
}
