//! The kernel backends against the f32 reference, and the two weight modes against each other.

use milbridge_train::WeightMode;
use milbridge_train::backend::{Backend, ReferenceBackend};
use milbridge_train::kernels::KernelBackend;
use milbridge_train::model::{ModelSpec, Params};
use milbridge_train::step::{self, Workspace};

fn window(spec: &ModelSpec, offset: u16) -> (Vec<u16>, Vec<u16>) {
    let vocab = spec.vocab as u16;
    let inputs: Vec<u16> = (0..spec.seq as u16)
        .map(|i| (i * 37 + offset) % vocab)
        .collect();
    let targets: Vec<u16> = (0..spec.seq as u16)
        .map(|i| (i * 37 + offset + 37) % vocab)
        .collect();
    (inputs, targets)
}

#[test]
fn kernel_forward_backward_matches_the_reference() {
    kernels_match_the_reference(&ModelSpec::tiny(), 11);
}

/// Qwen3's head structure scaled down (q/k norm; q_dim 128 = 2 × dim; 2 kv heads for 4 query
/// heads; head_dim 32 ≠ dim / heads): the q/k-norm kernels in both weight modes.
#[test]
fn qwen3_kernel_forward_backward_matches_the_reference() {
    let spec = ModelSpec {
        name: "qwen3-scaled".into(),
        dim: 64,
        hidden: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 32,
        seq: 16,
        vocab: 64,
        qk_norm: true,
    };
    // gains away from 1, so that a gain read from the wrong place shows
    let mut params = Params::init(&spec, 13);
    let mut rng = milbridge_train::rng::Rng::new(2);
    for l in &mut params.layers {
        for g in l.q_norm.iter_mut().chain(l.k_norm.iter_mut()) {
            *g = (1.0 + 0.3 * rng.normal()) as f32;
        }
    }
    kernels_match_the_reference_with(&spec, &params);
}

fn kernels_match_the_reference(spec: &ModelSpec, seed: u64) {
    kernels_match_the_reference_with(spec, &Params::init(spec, seed));
}

fn kernels_match_the_reference_with(spec: &ModelSpec, params: &Params) {
    let spec = spec.clone();
    let params = params.clone();
    let (inputs, targets) = window(&spec, 5);
    let mut ws = Workspace::new(&spec);
    let mut reference = ReferenceBackend::new(&spec);
    reference.load_weights(&params).unwrap();
    let mut g_ref = Params::zeros(&spec);
    let l_ref = step::forward_backward(
        &mut reference,
        &params,
        &mut g_ref,
        &inputs,
        &targets,
        256.0,
        &mut ws,
    )
    .unwrap();
    for mode in [
        WeightMode::Params,
        WeightMode::Packed,
        WeightMode::PackedRestage,
    ] {
        let t0 = std::time::Instant::now();
        let mut k = KernelBackend::new(&spec, mode, false).unwrap();
        eprintln!(
            "{mode:?}: compile {:?}, {} cold, {} kernels",
            t0.elapsed(),
            k.cold_compiles(),
            k.kernel_count()
        );
        k.load_weights(&params).unwrap();
        let mut g = Params::zeros(&spec);
        let t0 = std::time::Instant::now();
        let l = step::forward_backward(&mut k, &params, &mut g, &inputs, &targets, 256.0, &mut ws)
            .unwrap();
        eprintln!("{mode:?}: step {:?} loss {l} ref {l_ref}", t0.elapsed());
        assert!((l - l_ref).abs() < 1e-3, "{mode:?}: {l} vs {l_ref}");
        for ((name, _, a), (_, _, b)) in g.tensors(&spec).into_iter().zip(g_ref.tensors(&spec)) {
            let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
            let rel = (num / den.max(1e-30)).sqrt();
            eprintln!("{mode:?} {name}: rel err {rel:.2e}");
            assert!(den > 0.0, "{name}: zero reference gradient");
            assert!(rel < 2e-2, "{mode:?} {name}: relative error {rel}");
        }
    }
}
