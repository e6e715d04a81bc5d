//! Gradient check of the whole model through the compiled kernels (tiny config, exact precision
//! profile) against central finite differences of the loss, one random direction per tensor.
//! The kernels compute in fp16, so each direction is scaled to move the loss by a few hundredths,
//! well above the fp16 noise of the loss.

use milbridge_train::WeightMode;
use milbridge_train::backend::Backend;
use milbridge_train::kernels::KernelBackend;
use milbridge_train::model::{ModelSpec, Params};
use milbridge_train::rng::Rng;
use milbridge_train::step::{self, Workspace};

#[test]
fn kernel_gradients_match_finite_differences() {
    kernel_gradients_match(&ModelSpec::tiny(), WeightMode::Params);
}

/// Qwen3's head structure (q/k norm, q_dim 2 × dim, 2 kv heads for 4 query heads, head_dim
/// 32 ≠ dim / heads) through the packed kernels, the mode with the q/k-norm gains as columns of
/// the spatial input.
#[test]
fn qwen3_kernel_gradients_match_finite_differences() {
    let spec = ModelSpec::qwen3_tiny();
    kernel_gradients_match(&spec, WeightMode::Packed);
}

fn kernel_gradients_match(spec: &ModelSpec, mode: WeightMode) {
    let spec = spec.clone();
    let mut params = Params::init(&spec, 21);
    let mut rng = Rng::new(5);
    // larger than the init so that every path carries gradient
    for (t, decay) in params.tensors_mut() {
        let s = if decay { 0.05 } else { 0.2 };
        for x in t.iter_mut() {
            *x += (rng.normal() * s) as f32;
        }
    }
    let vocab = spec.vocab;
    let inputs: Vec<u16> = (0..spec.seq).map(|i| (i * 29 % vocab) as u16).collect();
    let targets: Vec<u16> = (0..spec.seq)
        .map(|i| ((i * 29 + 11) % vocab) as u16)
        .collect();
    let mut k = KernelBackend::new(&spec, mode, false).expect("kernels");
    k.load_weights(&params).expect("weights");
    let mut ws = Workspace::new(&spec);
    let mut grads = Params::zeros(&spec);
    let scale = 1024.0f32;
    step::forward_backward(
        &mut k, &params, &mut grads, &inputs, &targets, scale, &mut ws,
    )
    .expect("step");
    let names: Vec<String> = params.tensors(&spec).into_iter().map(|t| t.0).collect();
    let mut worst = 0.0f64;
    for (ti, name) in names.iter().enumerate() {
        let g: Vec<f32> = grads.tensors(&spec)[ti]
            .2
            .iter()
            .map(|g| g / scale)
            .collect();
        let gnorm = g.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!(gnorm > 0.0, "{name}: zero gradient");
        // the direction mixes the gradient (so the derivative is sizeable) with noise (so a wrong
        // gradient with the right sign still fails)
        let dir: Vec<f32> = g
            .iter()
            .map(|x| (f64::from(*x) / gnorm + rng.normal() / (g.len() as f64).sqrt()) as f32)
            .collect();
        let analytic: f64 = g
            .iter()
            .zip(&dir)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let h = (0.03 / analytic.abs()).min(0.5) as f32;
        let mut eval = |sign: f32| {
            let mut p = params.clone();
            for (x, d) in p.tensors_mut()[ti].0.iter_mut().zip(&dir) {
                *x += sign * h * d;
            }
            k.load_weights(&p).expect("weights");
            f64::from(step::loss(&mut k, &p, &inputs, &targets, &mut ws).expect("loss"))
        };
        let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * f64::from(h));
        let rel = (numeric - analytic).abs() / analytic.abs();
        worst = worst.max(rel);
        eprintln!("{name}: analytic {analytic:.5} numeric {numeric:.5} rel {rel:.2e} (h {h:.3})");
        assert!(
            rel < 0.05,
            "{name}: finite difference {numeric} vs analytic {analytic}"
        );
    }
    eprintln!("worst relative error {worst:.2e}");
}
