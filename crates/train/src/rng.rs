//! A small deterministic random number generator (SplitMix64), so that the same seed gives the
//! same initial weights, the same data positions and the same samples on every machine.
//!
//! No `rand` crate: the trainer needs uniform floats, bounded integers and normal deviates, and
//! it needs to save and restore the generator's exact state in a checkpoint.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit state advanced by a Weyl sequence and
/// finalised by a mixing function. Its whole state is one `u64` ([`Rng::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A generator for an independent stream derived from `seed` and a `stream` number.
    pub fn stream(seed: u64, stream: u64) -> Rng {
        let mut mixer = Rng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng::new(mixer.next_u64())
    }

    /// The whole state, for checkpoints; [`Rng::from_state`] restores it.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A generator continuing from a saved [`Rng::state`].
    pub fn from_state(state: u64) -> Rng {
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[0, 1)` with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// sizes used here). Returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A standard normal deviate (Box–Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_state_round_trips() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = a.state();
        let x = a.next_u64();
        assert_eq!(Rng::from_state(saved).next_u64(), x);
        assert_ne!(Rng::new(43).next_u64(), Rng::new(42).next_u64());
    }

    #[test]
    fn known_first_output_of_splitmix64() {
        // The published SplitMix64 sequence for seed 0 starts with 0xE220A8397B1DCDAF.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn uniform_ranges_and_moments() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let mut sum = 0.0;
        let mut sum_sq_normal = 0.0;
        for _ in 0..n {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            let f = rng.next_f32();
            assert!((0.0..1.0).contains(&f));
            assert!(rng.below(10) < 10);
            sum += u;
            let z = rng.normal();
            sum_sq_normal += z * z;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let var = sum_sq_normal / n as f64;
        assert!((var - 1.0).abs() < 0.05, "normal variance {var}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn streams_differ() {
        assert_ne!(Rng::stream(1, 0).next_u64(), Rng::stream(1, 1).next_u64());
    }
}
