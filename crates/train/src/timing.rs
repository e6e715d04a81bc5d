//! Where a step's time goes: the breakdown `milbridge bench train` prints (issue 7) and the
//! trainer accumulates as it runs.
//!
//! Categories (wall-clock on the training thread, so they add up to the step):
//! - `kernels`: evaluating the compiled kernels of the layers (activation writes, eval, reads);
//! - `weights`: weight writes (function-parameter surfaces at the optimizer step) or restaging
//!   (packed mode: every call rewrites the packed input, weights included; the optimizer step
//!   re-transposes each layer's weights into its staging buffer);
//! - `dw_wait`: the part of the dW GEMMs not hidden behind kernel evaluation (the training
//!   thread waiting for the dW thread at the end of the backward pass); `dw_busy` is the dW
//!   thread's own busy time, reported separately (it overlaps the others);
//! - `optimizer`: unscale, overflow check, clipping, AdamW;
//! - `loss`: the classifier forward and backward kernels and the cross-entropy;
//! - `other`: everything else (RMSNorm, RoPE backward, residual adds, embedding, GQA tiling).

use std::time::{Duration, Instant};

/// Accumulated time per category (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Breakdown {
    /// Kernel evaluation of the layer kernels.
    pub kernels: Duration,
    /// Weight writes or restaging.
    pub weights: Duration,
    /// Waiting for the dW thread.
    pub dw_wait: Duration,
    /// The dW thread's busy time (overlaps the other categories; not part of `total`'s sum).
    pub dw_busy: Duration,
    /// Unscale, clip, AdamW.
    pub optimizer: Duration,
    /// Classifier and cross-entropy.
    pub loss: Duration,
    /// Wall time of everything measured.
    pub total: Duration,
}

impl Breakdown {
    /// `total` minus the named categories (never negative).
    pub fn other(&self) -> Duration {
        self.total
            .saturating_sub(self.kernels + self.weights + self.dw_wait + self.optimizer + self.loss)
    }

    /// Adds `other` category by category.
    pub fn add(&mut self, other: &Breakdown) {
        self.kernels += other.kernels;
        self.weights += other.weights;
        self.dw_wait += other.dw_wait;
        self.dw_busy += other.dw_busy;
        self.optimizer += other.optimizer;
        self.loss += other.loss;
        self.total += other.total;
    }

    /// The categories in milliseconds, in print order, `other` included.
    pub fn millis(&self) -> Vec<(&'static str, f64)> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        vec![
            ("kernels", ms(self.kernels)),
            ("weights", ms(self.weights)),
            ("dw_wait", ms(self.dw_wait)),
            ("dw_busy", ms(self.dw_busy)),
            ("optimizer", ms(self.optimizer)),
            ("loss", ms(self.loss)),
            ("other", ms(self.other())),
            ("total", ms(self.total)),
        ]
    }

    /// Every category divided by `n` (per-step means).
    pub fn div(&self, n: u32) -> Breakdown {
        let n = n.max(1);
        Breakdown {
            kernels: self.kernels / n,
            weights: self.weights / n,
            dw_wait: self.dw_wait / n,
            dw_busy: self.dw_busy / n,
            optimizer: self.optimizer / n,
            loss: self.loss / n,
            total: self.total / n,
        }
    }
}

/// Runs `f`, adding its wall time to `acc`.
pub fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    *acc += t0.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_is_the_unnamed_remainder_and_never_negative() {
        let ms = Duration::from_millis;
        let mut b = Breakdown {
            kernels: ms(5),
            weights: ms(1),
            dw_wait: ms(2),
            dw_busy: ms(50),
            optimizer: ms(0),
            loss: ms(1),
            total: ms(10),
        };
        assert_eq!(b.other(), ms(1), "dw_busy overlaps and is not subtracted");
        b.total = ms(3);
        assert_eq!(b.other(), Duration::ZERO);
        let mut sum = Breakdown::default();
        sum.add(&b);
        sum.add(&b);
        assert_eq!(sum.div(2), b);
        let named: Vec<_> = b.millis().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            named,
            [
                "kernels",
                "weights",
                "dw_wait",
                "dw_busy",
                "optimizer",
                "loss",
                "other",
                "total"
            ]
        );
    }
}
