//! The optimizer side of a step: AdamW, the cosine learning-rate schedule with linear warm-up,
//! dynamic fp16 loss scaling and global-norm gradient clipping.
//!
//! All reductions run in a fixed order in f64 (fixed-size chunks combined in order, whatever
//! the thread count), so the same gradients give the same update bits on every run. AdamW is
//! elementwise, so splitting it over threads cannot change a bit either.

use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (decoupled weight decay, as training_dynamic's `adam_update`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// Decoupled weight decay (applied to matrices and the embedding, not to norm gains).
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl AdamW {
    /// One update of `w` from gradient `g` with moments `m`, `v`, at 1-based step `t`:
    /// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g²`,
    /// `w -= lr (m̂ / (sqrt(v̂) + eps) + wd w)` with bias-corrected `m̂`, `v̂`.
    #[allow(
        clippy::too_many_arguments,
        reason = "a tensor, its gradient, two moments, and the step"
    )]
    pub fn update(
        &self,
        w: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        t: u64,
        lr: f32,
        decay: bool,
    ) {
        assert!(
            w.len() == g.len() && w.len() == m.len() && w.len() == v.len(),
            "invariant: a parameter, its gradient and its moments have one length"
        );
        let t = i32::try_from(t.max(1)).unwrap_or(i32::MAX);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let wd = if decay { self.weight_decay } else { 0.0 };
        for i in 0..w.len() {
            m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * g[i];
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g[i] * g[i];
            let mh = m[i] / bc1;
            let vh = v[i] / bc2;
            w[i] -= lr * (mh / (vh.sqrt() + self.eps) + wd * w[i]);
        }
    }
}

/// One tensor's share of an optimizer step (see [`AdamW::update_all`]).
pub struct AdamJob<'a> {
    /// The parameter.
    pub w: &'a mut [f32],
    /// Its accumulated gradient (scaled; zeroed by the update).
    pub g: &'a mut [f32],
    /// First moment.
    pub m: &'a mut [f32],
    /// Second moment.
    pub v: &'a mut [f32],
    /// Whether weight decay applies.
    pub decay: bool,
}

/// Elements per parallel optimizer chunk (also the fixed unit of [`sum_squares_all`]).
const CHUNK: usize = 1 << 16;

impl AdamW {
    /// One step over every tensor, with the gradient read as `g · g_scale` (the unscale and
    /// clip factors folded in) and reset to zero in the same sweep — one pass over memory
    /// instead of four. Chunks of every tensor are spread over the CPU's threads; the result
    /// equals [`AdamW::update`] on `g · g_scale` bit for bit.
    pub fn update_all(&self, jobs: Vec<AdamJob<'_>>, g_scale: f32, t: u64, lr: f32) {
        let t = i32::try_from(t.max(1)).unwrap_or(i32::MAX);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let mut pieces = Vec::new();
        for job in jobs {
            assert!(
                job.w.len() == job.g.len()
                    && job.w.len() == job.m.len()
                    && job.w.len() == job.v.len(),
                "invariant: a parameter, its gradient and its moments have one length"
            );
            let AdamJob { w, g, m, v, decay } = job;
            for (((w, g), m), v) in w
                .chunks_mut(CHUNK)
                .zip(g.chunks_mut(CHUNK))
                .zip(m.chunks_mut(CHUNK))
                .zip(v.chunks_mut(CHUNK))
            {
                pieces.push(AdamJob { w, g, m, v, decay });
            }
        }
        crate::par::map(pieces, |job| {
            let wd = if job.decay { self.weight_decay } else { 0.0 };
            for i in 0..job.w.len() {
                let g = job.g[i] * g_scale;
                job.g[i] = 0.0;
                let m = self.beta1 * job.m[i] + (1.0 - self.beta1) * g;
                let v = self.beta2 * job.v[i] + (1.0 - self.beta2) * g * g;
                job.m[i] = m;
                job.v[i] = v;
                let mh = m / bc1;
                let vh = v / bc2;
                job.w[i] -= lr * (mh / (vh.sqrt() + self.eps) + wd * job.w[i]);
            }
        });
    }
}

/// Σx² over every tensor in f64, or `None` if any element is not finite. Fixed-size chunks
/// are summed in parallel and combined in order, so the bits do not depend on threads.
pub fn sum_squares_all(tensors: &[&[f32]]) -> Option<f64> {
    let chunks: Vec<&[f32]> = tensors.iter().flat_map(|t| t.chunks(CHUNK)).collect();
    let partial = crate::par::map(chunks, sum_squares);
    partial.into_iter().sum()
}

/// Cosine learning rate with linear warm-up (training_dynamic's schedule): step `s` (0-based)
/// gets `max_lr (s+1)/warmup` during warm-up, then decays from `max_lr` to
/// `max_lr * min_lr_frac` along half a cosine until `total`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub max_lr: f32,
    /// Warm-up length in optimizer steps.
    pub warmup: u64,
    /// Total optimizer steps of the run.
    pub total: u64,
    /// Final learning rate as a fraction of `max_lr`.
    pub min_lr_frac: f32,
}

impl LrSchedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f32 / self.warmup as f32;
        }
        let min_lr = self.max_lr * self.min_lr_frac;
        let span = self.total.saturating_sub(self.warmup).max(1);
        let ratio = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        min_lr + (cos as f32) * (self.max_lr - min_lr)
    }
}

/// Dynamic loss scaling for fp16 backward passes: the loss gradient is multiplied by
/// [`LossScaler::scale`] before the backward kernels so small gradients survive fp16, and
/// divided out before the update. A step whose gradients overflowed (any inf or NaN) is skipped
/// and the scale halved; after `growth_interval` clean steps the scale doubles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale (a power of two).
    pub scale: f32,
    /// Clean optimizer steps since the last change.
    pub clean_steps: u64,
    /// Clean steps before the scale doubles (0: never grow).
    pub growth_interval: u64,
    /// Overflowed (skipped) steps so far.
    pub skipped: u64,
}

/// Largest loss scale the scaler grows to.
pub const MAX_LOSS_SCALE: f32 = 65536.0;

impl LossScaler {
    /// A scaler starting at `scale`, doubling after `growth_interval` clean steps.
    pub fn new(scale: f32, growth_interval: u64) -> LossScaler {
        LossScaler {
            scale,
            clean_steps: 0,
            growth_interval,
            skipped: 0,
        }
    }

    /// Records the outcome of an optimizer step; returns whether to apply it.
    pub fn update(&mut self, overflow: bool) -> bool {
        if overflow {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean_steps = 0;
            self.skipped += 1;
            return false;
        }
        self.clean_steps += 1;
        if self.growth_interval > 0 && self.clean_steps >= self.growth_interval {
            self.scale = (self.scale * 2.0).min(MAX_LOSS_SCALE);
            self.clean_steps = 0;
        }
        true
    }
}

/// Sum of squares of `g` in f64, in index order; `None` if any element is inf or NaN.
pub fn sum_squares(g: &[f32]) -> Option<f64> {
    let mut s = 0.0f64;
    for &x in g {
        if !x.is_finite() {
            return None;
        }
        s += f64::from(x) * f64::from(x);
    }
    Some(s)
}

/// The factor that clips a gradient of norm `norm` to `max_norm` (1 when no clipping applies
/// or `max_norm <= 0`).
pub fn clip_factor(norm: f64, max_norm: f32) -> f32 {
    if max_norm > 0.0 && norm > f64::from(max_norm) {
        (f64::from(max_norm) / norm) as f32
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let opt = AdamW {
            weight_decay: 0.0,
            ..AdamW::default()
        };
        let mut w = [1.0f32, -1.0, 0.5];
        let g = [0.3f32, -2.0, 0.0];
        let (mut m, mut v) = ([0.0f32; 3], [0.0f32; 3]);
        opt.update(&mut w, &g, &mut m, &mut v, 1, 0.01, true);
        // With bias correction m̂ = g and v̂ = g², so the step is lr * sign(g).
        assert!((w[0] - 0.99).abs() < 1e-6, "{}", w[0]);
        assert!((w[1] - (-0.99)).abs() < 1e-6, "{}", w[1]);
        assert_eq!(w[2], 0.5);
        assert!((m[0] - 0.03).abs() < 1e-7);
        assert!((v[1] - 0.05 * 4.0).abs() < 1e-6);
    }

    #[test]
    fn adamw_weight_decay_only_when_asked() {
        let opt = AdamW::default();
        let (mut a, mut b) = ([2.0f32], [2.0f32]);
        let g = [0.0f32];
        opt.update(&mut a, &g, &mut [0.0], &mut [0.0], 1, 0.1, true);
        opt.update(&mut b, &g, &mut [0.0], &mut [0.0], 1, 0.1, false);
        assert!((a[0] - (2.0 - 0.1 * 0.1 * 2.0)).abs() < 1e-6);
        assert_eq!(b[0], 2.0);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = LrSchedule {
            max_lr: 1e-3,
            warmup: 10,
            total: 110,
            min_lr_frac: 0.1,
        };
        assert!((s.lr(0) - 1e-4).abs() < 1e-9);
        assert!((s.lr(9) - 1e-3).abs() < 1e-9);
        assert!((s.lr(10) - 1e-3).abs() < 1e-9);
        assert!((s.lr(60) - 0.55e-3).abs() < 1e-7, "{}", s.lr(60));
        assert!((s.lr(110) - 1e-4).abs() < 1e-9);
        assert!((s.lr(500) - 1e-4).abs() < 1e-9);
        let mut prev = f32::INFINITY;
        for step in 10..110 {
            assert!(s.lr(step) <= prev);
            prev = s.lr(step);
        }
    }

    #[test]
    fn loss_scaler_backs_off_and_grows() {
        let mut s = LossScaler::new(1024.0, 3);
        assert!(!s.update(true));
        assert_eq!(s.scale, 512.0);
        assert_eq!(s.skipped, 1);
        assert!(s.update(false));
        assert!(s.update(false));
        assert_eq!(s.scale, 512.0);
        assert!(s.update(false));
        assert_eq!(s.scale, 1024.0);
        let mut tiny = LossScaler::new(1.0, 0);
        tiny.update(true);
        assert_eq!(tiny.scale, 1.0, "never below 1");
    }

    #[test]
    fn norms_and_clipping() {
        assert_eq!(sum_squares(&[3.0, 4.0]), Some(25.0));
        assert_eq!(sum_squares(&[1.0, f32::INFINITY]), None);
        assert_eq!(sum_squares(&[f32::NAN]), None);
        assert_eq!(clip_factor(5.0, 1.0), 0.2);
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(5.0, 0.0), 1.0);
        let big: Vec<f32> = (0..3 * CHUNK + 17).map(|i| (i % 7) as f32 - 3.0).collect();
        let small = [3.0f32, 4.0];
        let serial = sum_squares(&big).unwrap() + 25.0;
        assert_eq!(sum_squares_all(&[&big, &small]), Some(serial));
        assert_eq!(sum_squares_all(&[&big, &[f32::NAN]]), None);
    }

    #[test]
    fn update_all_equals_update_on_the_scaled_gradient_and_zeroes_it() {
        let opt = AdamW::default();
        let n = 2 * CHUNK + 5;
        let w0: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-2)
            .collect();
        let g0: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 1e-3)
            .collect();
        let m0: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 1e-4).collect();
        let v0: Vec<f32> = (0..n).map(|i| (i % 11) as f32 * 1e-6).collect();
        let scale = 0.37f32;
        for decay in [true, false] {
            let (mut w1, mut m1, mut v1) = (w0.clone(), m0.clone(), v0.clone());
            let gs: Vec<f32> = g0.iter().map(|g| g * scale).collect();
            opt.update(&mut w1, &gs, &mut m1, &mut v1, 3, 1e-3, decay);
            let (mut w2, mut g2, mut m2, mut v2) = (w0.clone(), g0.clone(), m0.clone(), v0.clone());
            opt.update_all(
                vec![AdamJob {
                    w: &mut w2,
                    g: &mut g2,
                    m: &mut m2,
                    v: &mut v2,
                    decay,
                }],
                scale,
                3,
                1e-3,
            );
            assert_eq!((w1, m1, v1), (w2, m2, v2));
            assert!(g2.iter().all(|&g| g == 0.0));
        }
    }
}
