//! CPU capabilities, ISA tiers and the `MILBRIDGE_*` knobs read by this crate.
//!
//! [`caps`] runs CPUID once (cached in a `OnceLock`). AMX counts only when the CPU reports the
//! tile bits *and* Linux grants this process the tile-data XSAVE state through
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (the gate tract-linalg uses). Under
//! `cfg(miri)` or on other architectures every capability is off and the tier is
//! [`Isa::Generic`].
#![allow(
    unsafe_code,
    reason = "the arch_prctl syscall that requests AMX tile permission"
)]

use std::sync::OnceLock;

/// Instruction-set tiers, ordered from least to most capable, so capping a tier is a `min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, auto-vectorised for the baseline target.
    Generic,
    /// AVX2 + FMA + F16C (256-bit).
    Avx2,
    /// AVX-512 F/BW/VL (512-bit), on top of the AVX2 tier.
    Avx512,
    /// AMX tiles (bf16), on top of the AVX-512 tier.
    Amx,
}

impl Isa {
    /// Every tier, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Amx];

    /// The tier's name as used in kernel names, logs and `MILBRIDGE_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
        }
    }

    /// Parses a tier name as accepted by `MILBRIDGE_ISA` (case-insensitive, surrounding
    /// whitespace ignored).
    pub fn parse(text: &str) -> Option<Isa> {
        let text = text.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the host CPU (and OS, for AMX) supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// AVX2 integer and float 256-bit operations.
    pub avx2: bool,
    /// Fused multiply-add (FMA3).
    pub fma: bool,
    /// Half-precision conversions (`vcvtph2ps` / `vcvtps2ph`).
    pub f16c: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word operations.
    pub avx512bw: bool,
    /// AVX-512 vector-length extensions (128/256-bit forms).
    pub avx512vl: bool,
    /// AVX-512 bf16 conversions and dot products.
    pub avx512bf16: bool,
    /// AVX-512 fp16 arithmetic.
    pub avx512fp16: bool,
    /// AMX tile architecture (CPUID.7.0:EDX bit 24).
    pub amx_tile: bool,
    /// AMX bf16 dot products (CPUID.7.0:EDX bit 22).
    pub amx_bf16: bool,
    /// AMX int8 dot products (CPUID.7.0:EDX bit 25).
    pub amx_int8: bool,
    /// Linux granted the tile-data XSAVE state (`arch_prctl(ARCH_REQ_XCOMP_PERM)` succeeded).
    pub amx_permitted: bool,
}

impl Caps {
    /// The best tier these capabilities allow.
    pub fn best_isa(&self) -> Isa {
        let avx2 = self.avx2 && self.fma && self.f16c;
        let avx512 = avx2 && self.avx512f && self.avx512bw && self.avx512vl;
        let amx = avx512 && self.amx_tile && self.amx_bf16 && self.amx_permitted;
        if amx {
            Isa::Amx
        } else if avx512 {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Generic
        }
    }
}

/// The host's capabilities, detected once.
pub fn caps() -> &'static Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn detect() -> Caps {
    use std::arch::is_x86_feature_detected as has;
    // CPUID leaf 7 sub-leaf 0, EDX: bit 22 amx-bf16, bit 24 amx-tile, bit 25 amx-int8. The std
    // detection macro knows AMX only on nightly, so we read the bits by hand.
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let amx_int8 = leaf7.edx & (1 << 25) != 0;
    let amx_permitted = amx_tile && request_amx_permission();
    Caps {
        avx2: has!("avx2"),
        fma: has!("fma"),
        f16c: has!("f16c"),
        avx512f: has!("avx512f"),
        avx512bw: has!("avx512bw"),
        avx512vl: has!("avx512vl"),
        avx512bf16: has!("avx512bf16"),
        avx512fp16: has!("avx512fp16"),
        amx_tile,
        amx_bf16,
        amx_int8,
        amx_permitted,
    }
}

#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn detect() -> Caps {
    Caps::default()
}

/// Asks Linux for permission to use the AMX tile-data state; true when granted (or already held).
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
fn request_amx_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, feature) takes two integers, touches no memory of
    // ours and only widens the process's permitted XSAVE features; failure is reported as -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux"), not(miri)))]
fn request_amx_permission() -> bool {
    false
}

/// The best tier the host supports.
pub fn host_isa() -> Isa {
    caps().best_isa()
}

/// True when the host supports `isa` (every tier at or below [`host_isa`]).
pub fn isa_available(isa: Isa) -> bool {
    isa <= host_isa()
}

/// [`host_isa`] capped by `MILBRIDGE_ISA`; the knob can lower the tier, never raise it. An
/// unknown value is ignored (the host tier is used).
pub fn selected_isa() -> Isa {
    static SELECTED: OnceLock<Isa> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        let host = host_isa();
        match std::env::var(KNOB_ISA).ok().as_deref().and_then(Isa::parse) {
            Some(cap) => host.min(cap),
            None => host,
        }
    })
}

/// Number of threads GEMM and the engine use: `MILBRIDGE_THREADS` (a positive integer) or the
/// available parallelism.
pub fn thread_count() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let from_env = std::env::var(KNOB_THREADS)
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .filter(|&count| count > 0);
        from_env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// How long (µs) an idle pool worker spins before parking: `MILBRIDGE_SPIN_US`, default 200.
pub fn spin_micros() -> u64 {
    static SPIN: OnceLock<u64> = OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var(KNOB_SPIN_US)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(200)
    })
}

const KNOB_ISA: &str = "MILBRIDGE_ISA";
const KNOB_THREADS: &str = "MILBRIDGE_THREADS";
const KNOB_SPIN_US: &str = "MILBRIDGE_SPIN_US";

/// `(name, doc)` of every `MILBRIDGE_*` environment variable this crate reads.
pub const KNOBS: &[(&str, &str)] = &[
    (
        KNOB_ISA,
        "cap the ISA tier: generic|avx2|avx512|amx (lowers only; unknown values are ignored)",
    ),
    (
        KNOB_THREADS,
        "threads in the global pool, caller included (default: available parallelism)",
    ),
    (
        KNOB_SPIN_US,
        "microseconds an idle pool worker busy-waits before parking (default 200)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_named() {
        assert!(Isa::Generic < Isa::Avx2 && Isa::Avx2 < Isa::Avx512 && Isa::Avx512 < Isa::Amx);
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse(" AVX512 "), Some(Isa::Avx512));
        assert_eq!(Isa::parse("sse9"), None);
    }

    #[test]
    fn host_tier_is_consistent() {
        let host = host_isa();
        eprintln!("host isa: {host}, caps: {:?}", caps());
        assert!(isa_available(Isa::Generic));
        assert!(isa_available(host));
        assert!(selected_isa() <= host);
        assert!(thread_count() >= 1);
        if host >= Isa::Avx512 {
            assert!(caps().avx512f && caps().avx512bw && caps().avx512vl);
        }
        if host == Isa::Amx {
            assert!(caps().amx_tile && caps().amx_bf16 && caps().amx_permitted);
        }
    }

    #[test]
    fn caps_rank_tiers() {
        let mut caps = Caps::default();
        assert_eq!(caps.best_isa(), Isa::Generic);
        caps.avx2 = true;
        caps.fma = true;
        assert_eq!(caps.best_isa(), Isa::Generic, "avx2 tier needs f16c too");
        caps.f16c = true;
        assert_eq!(caps.best_isa(), Isa::Avx2);
        caps.avx512f = true;
        caps.avx512bw = true;
        caps.avx512vl = true;
        assert_eq!(caps.best_isa(), Isa::Avx512);
        caps.amx_tile = true;
        caps.amx_bf16 = true;
        assert_eq!(caps.best_isa(), Isa::Avx512, "amx needs the OS permission");
        caps.amx_permitted = true;
        assert_eq!(caps.best_isa(), Isa::Amx);
    }

    #[test]
    fn knobs_are_documented() {
        for (name, doc) in KNOBS {
            assert!(name.starts_with("MILBRIDGE_"));
            assert!(!doc.is_empty());
        }
    }
}
