//! The kernel backends against the f32 reference, and the two weight modes against each other.

use milbridge_train::WeightMode;
use milbridge_train::backend::{Backend, ReferenceBackend};
use milbridge_train::kernels::KernelBackend;
use milbridge_train::model::{ModelSpec, Params};
use milbridge_train::step::{self, Workspace};

fn window(spec: &ModelSpec, offset: u16) -> (Vec<u16>, Vec<u16>) {
    let inputs: Vec<u16> = (0..spec.seq as u16)
        .map(|i| (i * 37 + offset) % 256)
        .collect();
    let targets: Vec<u16> = (0..spec.seq as u16)
        .map(|i| (i * 37 + offset + 37) % 256)
        .collect();
    (inputs, targets)
}

#[test]
fn kernel_forward_backward_matches_the_reference() {
    let spec = ModelSpec::tiny();
    let params = Params::init(&spec, 11);
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
            assert!(rel < 2e-2, "{mode:?} {name}: relative error {rel}");
        }
    }
}
