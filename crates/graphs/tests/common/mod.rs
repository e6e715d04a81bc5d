//! A tiny f64 interpreter for exactly the ops the generators emit, so the kernels can be checked
//! against `graphs::math` without the engine (which sits above this crate in the layering).
//! No fp16 rounding happens here except in the constants the programs bake (scales, epsilons,
//! BLOBFILE tables), so agreement with the oracle is expected to about 1e-3 relative.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use mil::blob::{BlobMode, read_blob};
use mil::facts::BlobSource;
use mil::ir::{Function, Handle, Literal, OpKind, Value, ValueDef};
use milbridge_graphs::{GeneratedKernel, WeightLocation, stories};
use milbridge_mil as mil;
use std::collections::HashMap;

/// A dense tensor.
#[derive(Clone, Debug)]
pub struct T {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn unravel(mut idx: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        out[d] = idx % shape[d];
        idx /= shape[d];
    }
    out
}

fn broadcast(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> T {
    let rank = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let shape: Vec<usize> = sa.iter().zip(&sb).map(|(x, y)| (*x).max(*y)).collect();
    let (ta, tb) = (strides(&sa), strides(&sb));
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let ia: usize = idx
                .iter()
                .enumerate()
                .map(|(d, &v)| if sa[d] == 1 { 0 } else { v * ta[d] })
                .sum();
            let ib: usize = idx
                .iter()
                .enumerate()
                .map(|(d, &v)| if sb[d] == 1 { 0 } else { v * tb[d] })
                .sum();
            f(a.data[ia], b.data[ib])
        })
        .collect();
    T { shape, data }
}

fn transpose(x: &T, perm: &[usize]) -> T {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st = strides(&x.shape);
    let n = x.data.len();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let src: usize = idx.iter().enumerate().map(|(k, &v)| v * st[perm[k]]).sum();
            x.data[src]
        })
        .collect();
    T { shape, data }
}

fn matmul(x: &T, y: &T, tx: bool, ty: bool) -> T {
    let swap = |t: &T, flag: bool| {
        if flag {
            let r = t.shape.len();
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 1, r - 2);
            transpose(t, &perm)
        } else {
            t.clone()
        }
    };
    let (x, y) = (swap(x, tx), swap(y, ty));
    let (rx, ry) = (x.shape.len(), y.shape.len());
    let (m, k, n) = (x.shape[rx - 2], x.shape[rx - 1], y.shape[ry - 1]);
    assert_eq!(k, y.shape[ry - 2], "matmul inner dims");
    let bx = &x.shape[..rx - 2];
    let by = &y.shape[..ry - 2];
    let rank = bx.len().max(by.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (px, py) = (pad(bx), pad(by));
    let batch: Vec<usize> = px.iter().zip(&py).map(|(a, b)| (*a).max(*b)).collect();
    let nb: usize = batch.iter().product();
    let (sx, sy) = (strides(&px), strides(&py));
    let mut data = vec![0.0; nb * m * n];
    for b in 0..nb {
        let idx = unravel(b, &batch);
        let ox: usize = idx
            .iter()
            .enumerate()
            .map(|(d, &v)| if px[d] == 1 { 0 } else { v * sx[d] })
            .sum::<usize>()
            * m
            * k;
        let oy: usize = idx
            .iter()
            .enumerate()
            .map(|(d, &v)| if py[d] == 1 { 0 } else { v * sy[d] })
            .sum::<usize>()
            * k
            * n;
        for i in 0..m {
            for j in 0..n {
                data[b * m * n + i * n + j] = (0..k)
                    .map(|l| x.data[ox + i * k + l] * y.data[oy + l * n + j])
                    .sum();
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    T { shape, data }
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    (if axis < 0 { axis + rank as i64 } else { axis }) as usize
}

fn reduce_sum(x: &T, axes: &[usize], keep: bool) -> T {
    let mut shape = x.shape.clone();
    for &a in axes {
        shape[a] = 1;
    }
    let st = strides(&shape);
    let mut data = vec![0.0; shape.iter().product()];
    for (i, &v) in x.data.iter().enumerate() {
        let idx = unravel(i, &x.shape);
        let dst: usize = idx
            .iter()
            .enumerate()
            .map(|(d, &v)| if shape[d] == 1 { 0 } else { v * st[d] })
            .sum();
        data[dst] += v;
    }
    if !keep {
        shape = shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &s)| s)
            .collect();
    }
    T { shape, data }
}

fn softmax(x: &T, axis: usize) -> T {
    let outer: usize = x.shape[..axis].iter().product();
    let len = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut data = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            let max = (0..len)
                .map(|j| x.data[at(j)])
                .fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = (0..len).map(|j| (x.data[at(j)] - max).exp()).sum();
            for j in 0..len {
                data[at(j)] = (x.data[at(j)] - max).exp() / total;
            }
        }
    }
    T {
        shape: x.shape.clone(),
        data,
    }
}

fn concat(values: &[T], axis: usize, interleave: bool) -> T {
    let mut shape = values[0].shape.clone();
    shape[axis] = values.iter().map(|v| v.shape[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        if interleave {
            let len = values[0].shape[axis];
            for j in 0..len {
                for v in values {
                    data.extend_from_slice(
                        &v.data[(o * len + j) * inner..(o * len + j + 1) * inner],
                    );
                }
            }
        } else {
            for v in values {
                let len = v.shape[axis];
                data.extend_from_slice(&v.data[o * len * inner..(o + 1) * len * inner]);
            }
        }
    }
    T { shape, data }
}

fn slice_by_size(x: &T, begin: &[usize], size: &[usize]) -> T {
    let st = strides(&x.shape);
    let n: usize = size.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, size);
            x.data[idx
                .iter()
                .enumerate()
                .map(|(d, &v)| (v + begin[d]) * st[d])
                .sum::<usize>()]
        })
        .collect();
    T {
        shape: size.to_vec(),
        data,
    }
}

/// Evaluates `func` with parameter values `params` (in order); returns the outputs.
pub fn eval(func: &Function, params: &[T], blobs: &dyn BlobSource) -> Vec<T> {
    let mut env: HashMap<Handle<Value>, T> = HashMap::new();
    for (k, &p) in func.params.iter().enumerate() {
        let ty = func.values[p].decl.to_tensor_type().unwrap();
        assert_eq!(params[k].shape, ty.shape, "parameter {k} shape");
        env.insert(p, params[k].clone());
    }
    let literal = |handle: Handle<Value>| -> T {
        let ValueDef::Literal(lit) = &func.values[handle].def else {
            panic!("expected a literal")
        };
        let tensor = match lit {
            Literal::Tensor(t) => t.clone(),
            Literal::Blob(blob) => {
                let bytes = blobs.load(&blob.path).expect("blob present");
                read_blob(&bytes, blob.offset, &blob.ty, BlobMode::Strict)
                    .expect("blob reads")
                    .tensor
            }
        };
        T {
            shape: tensor.ty.shape.clone(),
            data: tensor.to_f64_vec().unwrap_or_default(),
        }
    };
    for (_, op) in func.ops.iter() {
        let get = |name: &str| -> T {
            env[&op
                .single(name)
                .unwrap_or_else(|| panic!("{} has {name}", op.kind))
                .value]
                .clone()
        };
        let ints = |name: &str| -> Vec<i64> { get(name).data.iter().map(|&v| v as i64).collect() };
        let flag = |name: &str| {
            op.single(name)
                .is_some_and(|u| env[&u.value].data[0] != 0.0)
        };
        let result = match op.kind {
            OpKind::Const => literal(op.single("val").unwrap().value),
            OpKind::Add => broadcast(&get("x"), &get("y"), |a, b| a + b),
            OpKind::Sub => broadcast(&get("x"), &get("y"), |a, b| a - b),
            OpKind::Mul => broadcast(&get("x"), &get("y"), |a, b| a * b),
            OpKind::Pow => broadcast(&get("x"), &get("y"), f64::powf),
            OpKind::Sigmoid => {
                let x = get("x");
                T {
                    data: x.data.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
                    shape: x.shape,
                }
            }
            OpKind::Reshape => {
                let x = get("x");
                let shape: Vec<usize> = ints("shape").iter().map(|&v| v as usize).collect();
                assert_eq!(shape.iter().product::<usize>(), x.data.len());
                T {
                    shape,
                    data: x.data,
                }
            }
            OpKind::Transpose => {
                let perm: Vec<usize> = ints("perm").iter().map(|&v| v as usize).collect();
                transpose(&get("x"), &perm)
            }
            OpKind::SliceBySize => {
                let begin: Vec<usize> = ints("begin").iter().map(|&v| v as usize).collect();
                let size: Vec<usize> = ints("size").iter().map(|&v| v as usize).collect();
                slice_by_size(&get("x"), &begin, &size)
            }
            OpKind::Matmul => matmul(
                &get("x"),
                &get("y"),
                flag("transpose_x"),
                flag("transpose_y"),
            ),
            OpKind::ReduceSum => {
                let x = get("x");
                let axes: Vec<usize> = ints("axes")
                    .iter()
                    .map(|&a| norm_axis(a, x.shape.len()))
                    .collect();
                reduce_sum(&x, &axes, flag("keep_dims"))
            }
            OpKind::Softmax => {
                let x = get("x");
                let axis = norm_axis(ints("axis")[0], x.shape.len());
                softmax(&x, axis)
            }
            OpKind::Concat => {
                let values: Vec<T> = op
                    .arg("values")
                    .unwrap()
                    .value
                    .uses()
                    .iter()
                    .map(|u| env[&u.value].clone())
                    .collect();
                let axis = norm_axis(ints("axis")[0], values[0].shape.len());
                concat(&values, axis, flag("interleave"))
            }
            OpKind::Conv => {
                // 1x1, groups 1, stride 1, no padding: a per-position matrix product.
                let (x, w) = (get("x"), get("weight"));
                assert!(w.shape[2..].iter().all(|&k| k == 1) && ints("groups")[0] == 1);
                let (oc, ic) = (w.shape[0], w.shape[1]);
                let spatial: usize = x.shape[2..].iter().product();
                let mut data = vec![0.0; oc * spatial];
                for o in 0..oc {
                    for i in 0..ic {
                        for s in 0..spatial {
                            data[o * spatial + s] += w.data[o * ic + i] * x.data[i * spatial + s];
                        }
                    }
                }
                let mut shape = x.shape.clone();
                shape[1] = oc;
                T { shape, data }
            }
            other => panic!("test interpreter has no {other}"),
        };
        let declared = func.values[op.results[0]].decl.to_tensor_type().unwrap();
        assert_eq!(result.shape, declared.shape, "{} result shape", op.kind);
        env.insert(op.results[0], result);
    }
    func.outputs.iter().map(|u| env[&u.value].clone()).collect()
}

/// Runs a generated kernel: activations and weights by name in their natural layouts (weights
/// `[rows][cols]` as the model stores them). Returns every tap by name, `[channels][seq]`.
pub fn run(
    kernel: &GeneratedKernel,
    acts: &[(&str, &[f64])],
    weights: &[(&str, &[f64])],
) -> HashMap<String, Vec<f64>> {
    let owned: Vec<(&str, Vec<f32>)> = acts
        .iter()
        .chain(weights)
        .map(|(name, values)| (*name, values.iter().map(|&v| v as f32).collect()))
        .collect();
    let named: Vec<(&str, &[f32])> = owned
        .iter()
        .map(|(name, values)| (*name, values.as_slice()))
        .collect();
    let buffers = kernel
        .param_buffers(&named)
        .unwrap_or_else(|err| panic!("{}: {err}", kernel.name));
    let func = &kernel.program.functions[kernel.program.entry().unwrap()];
    let params: Vec<T> = func
        .params
        .iter()
        .zip(buffers)
        .map(|(&p, buf)| T {
            shape: func.values[p].decl.to_tensor_type().unwrap().shape,
            data: buf.iter().map(|&v| f64::from(v)).collect(),
        })
        .collect();
    let blobs = if kernel
        .weights
        .iter()
        .any(|w| matches!(w.location, WeightLocation::Blob { .. }))
    {
        stories::weight_blob_map(kernel, &named).unwrap()
    } else {
        kernel.blob_map()
    };
    let outputs: Vec<Vec<f32>> = eval(func, &params, &blobs)
        .into_iter()
        .map(|t| t.data.iter().map(|&v| v as f32).collect())
        .collect();
    let slices: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
    kernel
        .taps
        .iter()
        .map(|tap| {
            let values = kernel
                .tap_values(&tap.name, &slices)
                .expect("tap inside its output");
            (
                tap.name.clone(),
                values.iter().map(|&v| f64::from(v)).collect(),
            )
        })
        .collect()
}

/// Asserts `got` matches `want` to `tol` relative to `want`'s largest magnitude.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let (idx, err) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f64),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= tol * scale,
        "{what}: max error {err:.3e} at {idx} (got {}, want {}), scale {scale:.3e}",
        got[idx],
        want[idx]
    );
}

/// splitmix64-based deterministic data in `[-scale, scale)`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    pub fn vec(&mut self, len: usize, scale: f64) -> Vec<f64> {
        (0..len).map(|_| self.next() * scale).collect()
    }
}
