//! Every elementwise kernel on every tier the host has, f32 and f16 storage, against scalar
//! f64 references computed from the same stored inputs. Sizes cover 1, primes, lanes − 1,
//! lanes, lanes + 1 of both vector widths (8 and 16) and the channel-first strips (32, 64).

use half::f16;

use super::*;

/// Tolerances: `|got − want| ≤ REL · scale + ABS`, plus one output rounding for f16.
mod tol {
    /// RMSNorm forward/backward, relative to the terms' magnitude.
    pub(super) const RMSNORM: f64 = 1e-5;
    /// SwiGLU forward.
    pub(super) const SWIGLU: f64 = 5e-6;
    /// SwiGLU backward (a longer chain of operations).
    pub(super) const SWIGLU_BACKWARD: f64 = 1e-5;
    /// RoPE: one product and one FMA, relative to `|x0·cos| + |x1·sin|`.
    pub(super) const ROPE: f64 = 5e-7;
    /// add / axpy: one rounding, relative to `|a| + |b|`.
    pub(super) const ADD: f64 = 1.2e-7;
    /// Softmax forward, absolute (outputs in [0, 1]).
    pub(super) const SOFTMAX_ABS: f64 = 2e-6;
    /// Softmax backward, relative to `|scale| · (|y·dy| + y · Σ|y·dy|)`.
    pub(super) const SOFTMAX_BACKWARD: f64 = 1e-5;
    /// f16 output rounding: half an ulp relative, plus the subnormal step.
    pub(super) const F16_REL: f64 = 1.0 / 2048.0;
    /// The f16 subnormal step.
    pub(super) const F16_ABS: f64 = 6.0e-8;
}

/// Deterministic pseudo-random values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn values<T: Storage>(&mut self, len: usize, amplitude: f32) -> Vec<T> {
        (0..len)
            .map(|_| T::from_f32(self.next() * amplitude))
            .collect()
    }
}

fn tiers() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|&isa| {
            let available = cpu::isa_available(isa);
            if !available {
                eprintln!("ew: skipping tier {isa} (not available on this host)");
            }
            available
        })
        .collect()
}

fn wide<T: Storage>(values: &[T]) -> Vec<f64> {
    values.iter().map(|v| v.to_f32() as f64).collect()
}

/// Checks `got[i]` against `(want, scale)[i]`; panics with the first few mismatches.
fn check<T: Storage>(label: &str, got: &[T], want: &[(f64, f64)], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let f16_out = T::NAME == "f16";
    let mut failures = Vec::new();
    for (idx, (value, &(expected, scale))) in got.iter().zip(want).enumerate() {
        let value = value.to_f32() as f64;
        let mut bound = rel * scale + abs;
        if f16_out {
            bound += tol::F16_REL * expected.abs() + tol::F16_ABS;
        }
        let error = (value - expected).abs();
        if error.is_nan() || error > bound {
            failures.push(format!(
                "  [{idx}] got {value:e}, expected {expected:e} (error {error:e} > {bound:e})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} wrong:\n{}",
        failures.len(),
        got.len(),
        failures.into_iter().take(8).collect::<Vec<_>>().join("\n")
    );
}

fn rms(values: &[f64], eps: f64) -> f64 {
    let mean = values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64;
    1.0 / (mean + eps).sqrt()
}

const ROW_SIZES: [usize; 13] = [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 768];

fn rmsnorm_rows_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    let eps = 1e-5f32;
    for dim in ROW_SIZES {
        let rows = 3;
        let x: Vec<T> = rng.values(rows * dim, 2.0);
        let w: Vec<T> = rng.values(dim, 1.5);
        let dy: Vec<T> = rng.values(rows * dim, 1.0);
        let (xs, ws, dys) = (wide(&x), wide(&w), wide(&dy));
        let mut out = vec![T::default(); rows * dim];
        rmsnorm_rows(isa, &x, &w, eps, &mut out);
        let mut dx = vec![T::default(); rows * dim];
        let dw0: Vec<f32> = (0..dim).map(|i| i as f32 * 0.01).collect();
        let mut dw = dw0.clone();
        rmsnorm_rows_backward(isa, &x, &w, &dy, eps, &mut dx, &mut dw);

        let mut want_y = Vec::new();
        let mut want_dx = Vec::new();
        let mut want_dw: Vec<(f64, f64)> =
            dw0.iter().map(|&v| (v as f64, v.abs() as f64)).collect();
        for row in 0..rows {
            let span = row * dim..(row + 1) * dim;
            let (xr, dyr) = (&xs[span.clone()], &dys[span]);
            let r = rms(xr, eps as f64);
            let dot: f64 = (0..dim).map(|i| ws[i] * dyr[i] * xr[i]).sum();
            let dot_scale: f64 = (0..dim).map(|i| (ws[i] * dyr[i] * xr[i]).abs()).sum();
            let coef = r * r * r * dot / dim as f64;
            let coef_scale = r * r * r * dot_scale / dim as f64;
            for i in 0..dim {
                let y = xr[i] * r * ws[i];
                want_y.push((y, y.abs()));
                let first = r * ws[i] * dyr[i];
                want_dx.push((first - coef * xr[i], first.abs() + coef_scale * xr[i].abs()));
                want_dw[i].0 += dyr[i] * xr[i] * r;
                want_dw[i].1 += (dyr[i] * xr[i] * r).abs();
            }
        }
        let label = format!("{} dim {dim}", kernel_name::<T>(EwOp::RmsNormRows, isa));
        check(&label, &out, &want_y, tol::RMSNORM, 0.0);
        let label = format!(
            "{} dim {dim}",
            kernel_name::<T>(EwOp::RmsNormRowsBackward, isa)
        );
        check(&label, &dx, &want_dx, tol::RMSNORM, 0.0);
        check::<f32>(&format!("{label} dw"), &dw, &want_dw, tol::RMSNORM, 0.0);
    }
}

fn rmsnorm_channels_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    let eps = 1e-5f32;
    for channels in [1, 3, 64] {
        for seq in [1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100] {
            let x: Vec<T> = rng.values(channels * seq, 2.0);
            let w: Vec<T> = rng.values(channels, 1.5);
            let dy: Vec<T> = rng.values(channels * seq, 1.0);
            let (xs, ws, dys) = (wide(&x), wide(&w), wide(&dy));
            let mut out = vec![T::default(); channels * seq];
            rmsnorm_channels(isa, &x, &w, seq, eps, &mut out);
            let mut dx = vec![T::default(); channels * seq];
            let mut dw = vec![0.5f32; channels];
            rmsnorm_channels_backward(isa, &x, &w, &dy, seq, eps, &mut dx, &mut dw);

            let mut want_y = vec![(0.0, 0.0); channels * seq];
            let mut want_dx = vec![(0.0, 0.0); channels * seq];
            let mut want_dw = vec![(0.5f64, 0.5f64); channels];
            for s in 0..seq {
                let column: Vec<f64> = (0..channels).map(|c| xs[c * seq + s]).collect();
                let r = rms(&column, eps as f64);
                let terms: Vec<f64> = (0..channels)
                    .map(|c| ws[c] * dys[c * seq + s] * xs[c * seq + s])
                    .collect();
                let coef = r * r * r * terms.iter().sum::<f64>() / channels as f64;
                let coef_scale =
                    r * r * r * terms.iter().map(|t| t.abs()).sum::<f64>() / channels as f64;
                for c in 0..channels {
                    let at = c * seq + s;
                    let y = xs[at] * r * ws[c];
                    want_y[at] = (y, y.abs());
                    let first = r * ws[c] * dys[at];
                    want_dx[at] = (
                        first - coef * xs[at],
                        first.abs() + coef_scale * xs[at].abs(),
                    );
                    want_dw[c].0 += dys[at] * xs[at] * r;
                    want_dw[c].1 += (dys[at] * xs[at] * r).abs();
                }
            }
            let label = format!(
                "{} C {channels} S {seq}",
                kernel_name::<T>(EwOp::RmsNormChannels, isa)
            );
            check(&label, &out, &want_y, tol::RMSNORM, 0.0);
            check(&format!("{label} dx"), &dx, &want_dx, tol::RMSNORM, 0.0);
            check::<f32>(&format!("{label} dw"), &dw, &want_dw, tol::RMSNORM, 0.0);
        }
    }
}

fn swiglu_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    for len in ROW_SIZES {
        // Gates up to ±12 reach the flat parts of the sigmoid.
        let gate: Vec<T> = rng.values(len, 12.0);
        let up: Vec<T> = rng.values(len, 2.0);
        let dout: Vec<T> = rng.values(len, 1.0);
        let (gs, us, ds) = (wide(&gate), wide(&up), wide(&dout));
        let mut out = vec![T::default(); len];
        swiglu(isa, &gate, &up, &mut out);
        let (mut dgate, mut dup) = (vec![T::default(); len], vec![T::default(); len]);
        swiglu_backward(isa, &gate, &up, &dout, &mut dgate, &mut dup);
        let mut want = Vec::new();
        let mut want_dgate = Vec::new();
        let mut want_dup = Vec::new();
        for i in 0..len {
            let s = 1.0 / (1.0 + (-gs[i]).exp());
            let silu = gs[i] * s;
            let y = silu * us[i];
            want.push((y, y.abs()));
            let dg = ds[i] * us[i] * s * (1.0 + gs[i] * (1.0 - s));
            // Near silu's minimum (a ≈ -1.28) `1 + a·(1 − σ)` cancels: scale by the terms' sizes.
            let terms = (ds[i] * us[i] * s).abs() * (1.0 + (gs[i] * (1.0 - s)).abs());
            want_dgate.push((dg, terms));
            let du = ds[i] * silu;
            want_dup.push((du, du.abs()));
        }
        let label = format!("{} len {len}", kernel_name::<T>(EwOp::SwiGlu, isa));
        check(&label, &out, &want, tol::SWIGLU, 1e-30);
        let label = format!("{} len {len}", kernel_name::<T>(EwOp::SwiGluBackward, isa));
        check(
            &format!("{label} dgate"),
            &dgate,
            &want_dgate,
            tol::SWIGLU_BACKWARD,
            1e-30,
        );
        check(&format!("{label} dup"), &dup, &want_dup, tol::SWIGLU, 1e-30);
    }
}

fn rope_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    for head_size in [2, 6, 8, 16, 18, 32, 64] {
        for heads in [1, 3] {
            let dim = head_size * heads;
            let rows = 5;
            let x: Vec<T> = rng.values(rows * dim, 3.0);
            let (cos, sin) = rope_tables(7, rows, head_size, 10_000.0);
            let mut out = vec![T::default(); rows * dim];
            rope(isa, &x, dim, head_size, &cos, &sin, &mut out);
            let mut back = vec![T::default(); rows * dim];
            rope_backward(isa, &x, dim, head_size, &cos, &sin, &mut back);
            let xs = wide(&x);
            let mut want = vec![(0.0, 0.0); rows * dim];
            let mut want_back = vec![(0.0, 0.0); rows * dim];
            for row in 0..rows {
                for head in 0..heads {
                    for pair in 0..head_size / 2 {
                        let at = row * dim + head * head_size + 2 * pair;
                        let c = cos[row * head_size / 2 + pair] as f64;
                        let s = sin[row * head_size / 2 + pair] as f64;
                        let (x0, x1) = (xs[at], xs[at + 1]);
                        let scale0 = (x0 * c).abs() + (x1 * s).abs();
                        let scale1 = (x0 * s).abs() + (x1 * c).abs();
                        want[at] = (x0 * c - x1 * s, scale0);
                        want[at + 1] = (x0 * s + x1 * c, scale1);
                        want_back[at] = (x0 * c + x1 * s, scale0);
                        want_back[at + 1] = (-x0 * s + x1 * c, scale1);
                    }
                }
            }
            let label = format!(
                "{} head {head_size} x {heads}",
                kernel_name::<T>(EwOp::Rope, isa)
            );
            check(&label, &out, &want, tol::ROPE, 0.0);
            let label = format!(
                "{} head {head_size} x {heads}",
                kernel_name::<T>(EwOp::RopeBackward, isa)
            );
            check(&label, &back, &want_back, tol::ROPE, 0.0);
        }
    }
}

fn add_axpy_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    for len in ROW_SIZES {
        let a: Vec<T> = rng.values(len, 5.0);
        let b: Vec<T> = rng.values(len, 5.0);
        let (as_, bs) = (wide(&a), wide(&b));
        let mut out = vec![T::default(); len];
        add(isa, &a, &b, &mut out);
        let want: Vec<(f64, f64)> = (0..len)
            .map(|i| (as_[i] + bs[i], as_[i].abs() + bs[i].abs()))
            .collect();
        check(
            &format!("{} len {len}", kernel_name::<T>(EwOp::Add, isa)),
            &out,
            &want,
            tol::ADD,
            0.0,
        );
        let mut y = b.clone();
        let alpha = -0.37f32;
        axpy(isa, alpha, &a, &mut y);
        let want: Vec<(f64, f64)> = (0..len)
            .map(|i| {
                let scaled = alpha as f64 * as_[i];
                (scaled + bs[i], scaled.abs() + bs[i].abs())
            })
            .collect();
        check(
            &format!("{} len {len}", kernel_name::<T>(EwOp::Axpy, isa)),
            &y,
            &want,
            tol::ADD,
            0.0,
        );
    }
}

/// The f64 softmax of one row of logits (`None` = masked).
fn softmax_ref(logits: &[Option<f64>]) -> Vec<f64> {
    let max = logits
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    let exps: Vec<f64> = logits
        .iter()
        .map(|l| l.map_or(0.0, |l| (l - max).exp()))
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn softmax_case<T: Storage>(isa: Isa, rng: &mut Rng) {
    let rows = 5;
    for n in [1, 7, 8, 9, 16, 17, 33, 100, 256] {
        let additive: Vec<f32> = (0..rows * n)
            .map(|i| {
                let v = rng.next();
                if i % 7 == 3 || (i >= 2 * n && i < 3 * n) {
                    f32::NEG_INFINITY
                } else {
                    v * 2.0
                }
            })
            .collect();
        let masks = [
            Mask::None,
            Mask::Causal { offset: 0 },
            Mask::Causal { offset: 2 },
            Mask::Additive {
                values: &additive,
                row_stride: n,
            },
            Mask::Additive {
                values: &additive[..n],
                row_stride: 0,
            },
        ];
        for (scale, amplitude) in [(0.125f32, 8.0f32), (1.0, 40.0)] {
            let x: Vec<T> = rng.values(rows * n, amplitude);
            let xs = wide(&x);
            for mask in masks {
                let mut out = vec![T::default(); rows * n];
                softmax_rows(isa, &x, n, scale, mask, &mut out);
                let mut want = Vec::new();
                for row in 0..rows {
                    let logits: Vec<Option<f64>> = (0..n)
                        .map(|j| {
                            let z = scale as f64 * xs[row * n + j];
                            match mask {
                                Mask::None => Some(z),
                                Mask::Causal { offset } => (j <= row + offset).then_some(z),
                                Mask::Additive { values, row_stride } => {
                                    let m = values[row * row_stride + j];
                                    (m != f32::NEG_INFINITY).then_some(z + m as f64)
                                }
                            }
                        })
                        .collect();
                    want.extend(softmax_ref(&logits).into_iter().map(|p| (p, 1.0)));
                }
                let label = format!(
                    "{} n {n} scale {scale} {mask:?}",
                    kernel_name::<T>(EwOp::Softmax, isa)
                )
                .chars()
                .take(160)
                .collect::<String>();
                check(&label, &out, &want, 0.0, tol::SOFTMAX_ABS);
                // Masked columns are exactly zero.
                for (idx, (value, (expected, _))) in out.iter().zip(&want).enumerate() {
                    if *expected == 0.0 {
                        assert_eq!(value.to_f32(), 0.0, "{label}: [{idx}] should be exactly 0");
                    }
                }

                let dy: Vec<T> = rng.values(rows * n, 1.0);
                let mut dx = vec![T::default(); rows * n];
                softmax_rows_backward(isa, &out, &dy, n, scale, &mut dx);
                let (ys, dys) = (wide(&out), wide(&dy));
                let mut want_dx = Vec::new();
                for row in 0..rows {
                    let span = row * n..(row + 1) * n;
                    let (yr, dyr) = (&ys[span.clone()], &dys[span]);
                    let dot: f64 = yr.iter().zip(dyr).map(|(y, d)| y * d).sum();
                    let dot_scale: f64 = yr.iter().zip(dyr).map(|(y, d)| (y * d).abs()).sum();
                    for j in 0..n {
                        let value = scale as f64 * yr[j] * (dyr[j] - dot);
                        let bound =
                            scale.abs() as f64 * ((yr[j] * dyr[j]).abs() + yr[j].abs() * dot_scale);
                        want_dx.push((value, bound));
                    }
                }
                let label = format!("{} n {n}", kernel_name::<T>(EwOp::SoftmaxBackward, isa));
                check(&label, &dx, &want_dx, tol::SOFTMAX_BACKWARD, 1e-30);
            }
        }
    }
}

/// Runs `case` for f32 and f16 storage on every available tier.
macro_rules! every_tier {
    ($($name:ident => $case:ident;)*) => {$(
        #[test]
        fn $name() {
            for isa in tiers() {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ isa as u64);
                $case::<f32>(isa, &mut rng);
                $case::<f16>(isa, &mut rng);
            }
        }
    )*};
}

every_tier! {
    rmsnorm_rows_forward_and_backward => rmsnorm_rows_case;
    rmsnorm_channels_forward_and_backward => rmsnorm_channels_case;
    swiglu_forward_and_backward => swiglu_case;
    rope_forward_and_backward => rope_case;
    add_and_axpy => add_axpy_case;
    softmax_forward_and_backward => softmax_case;
}

#[test]
fn kernel_names_follow_the_pattern() {
    assert_eq!(
        kernel_name::<f32>(EwOp::RmsNormRows, Isa::Avx512),
        "avx512_rmsnorm_rows_f32_16n"
    );
    assert_eq!(
        kernel_name::<f16>(EwOp::Softmax, Isa::Generic),
        "generic_softmax_f16_8n"
    );
    assert_eq!(
        kernel_name::<f16>(EwOp::RopeBackward, Isa::Avx2),
        "avx2_rope_bwd_f16_8n"
    );
    assert_eq!(
        kernel_name::<f32>(EwOp::Axpy, Isa::Amx),
        "avx512_axpy_f32_16n"
    );
    for isa in Isa::ALL {
        for op in EwOp::ALL {
            let name = kernel_name::<f32>(op, isa);
            assert!(name.ends_with("n") && name.contains("_f32_"), "{name}");
        }
    }
}

#[test]
fn rope_tables_follow_llama2c() {
    let (cos, sin) = rope_tables(3, 2, 4, 10_000.0);
    // position 3, pair 0: angle 3; pair 1: angle 3 / 100.
    assert!((cos[0] as f64 - 3f64.cos()).abs() < 1e-7);
    assert!((sin[1] as f64 - 0.03f64.sin()).abs() < 1e-7);
    // position 4, pair 1.
    assert!((cos[3] as f64 - 0.04f64.cos()).abs() < 1e-7);
}

#[test]
fn exp_is_accurate_and_flushes_to_zero() {
    for isa in tiers() {
        let inputs: Vec<f32> = (-1000..=1000)
            .map(|i| i as f32 * 0.0883)
            .chain([-87.0, -100.0, f32::NEG_INFINITY, 0.0, 88.0])
            .collect();
        let logits: Vec<f32> = inputs.clone();
        // softmax of [x, 0] = e^x / (e^x + 1): exercises exp through the public API.
        for &x in &logits {
            let row = [x, 0.0f32];
            let mut out = [0f32; 2];
            softmax_rows(isa, &row, 2, 1.0, Mask::None, &mut out);
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let want = if x == f32::NEG_INFINITY { 0.0 } else { want };
            assert!(
                (out[0] as f64 - want).abs() <= 4e-7 * want.max(1e-30) + 1e-37,
                "{isa}: softmax([{x}, 0])[0] = {}, expected {want}",
                out[0]
            );
        }
    }
}
