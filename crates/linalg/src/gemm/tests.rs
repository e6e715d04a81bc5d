//! The GEMM suite, stamped once per tier by `tier_suite!`; a tier the host lacks is logged as
//! skipped. Every product is checked against a naive f64 reference, C's padding is checked
//! untouched, and a mismatch prints a grid of the failing cells.

use half::{bf16, f16};

use super::*;

/// Tolerances, all relative to the `|A|·|B|` scale of each cell (`Σ_k |a_ik|·|b_kj|`).
mod tol {
    /// f32 accumulation (Exact, and the f32 accumulators of Fast): per unit of k.
    pub(super) const F32_PER_K: f64 = f32::EPSILON as f64;
    /// bf16 operands (Fast on Amx) are checked against a reference computed on the same
    /// bf16-rounded operands, so only accumulation error remains; AMX may flush denormals and
    /// sums pairs internally, so allow 4× the f32 bound.
    pub(super) const BF16_ACC_PER_K: f64 = 4.0 * f32::EPSILON as f64;
    /// An f16 C adds one rounding: half an f16 ulp relative to the value (2^-11), or the f16
    /// subnormal step near zero.
    pub(super) const F16_OUT_REL: f64 = 1.0 / 2048.0;
    /// The f16 subnormal step.
    pub(super) const F16_OUT_ABS: f64 = 6.0e-8;
    /// Floor for cells whose scale is zero.
    pub(super) const ABS_FLOOR: f64 = 1e-30;
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
}

/// How a test matrix is laid out in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    RowMajor,
    /// Column-major: the transposed view of a row-major buffer.
    ColMajor,
    /// Row-major with 3 spare elements per row and a 1-element (misaligned) start offset.
    Padded,
}

fn strides(layout: Layout, rows: usize, cols: usize) -> (usize, isize, isize, usize) {
    // (offset, row_stride, col_stride, buffer length)
    match layout {
        Layout::RowMajor => (0, cols as isize, 1, rows * cols),
        Layout::ColMajor => (0, 1, rows as isize, rows * cols),
        Layout::Padded => (1, cols as isize + 3, 1, 1 + rows * (cols + 3)),
    }
}

/// A test input: storage plus the values the kernel sees (after f16 rounding).
struct Input {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    dtype: Dtype,
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
    values: Vec<f32>,
}

impl Input {
    fn new(rng: &mut Rng, rows: usize, cols: usize, dtype: Dtype, layout: Layout) -> Input {
        let (offset, row_stride, col_stride, len) = strides(layout, rows, cols);
        let mut f32s = vec![f32::NAN; len];
        let mut values = vec![0f32; rows * cols];
        for row in 0..rows {
            for col in 0..cols {
                let mut value = rng.next();
                if dtype == Dtype::F16 {
                    value = f16::from_f32(value).to_f32();
                }
                values[row * cols + col] = value;
                f32s[offset + row * row_stride as usize + col * col_stride as usize] = value;
            }
        }
        let f16s = f32s.iter().map(|&v| f16::from_f32(v)).collect();
        Input {
            f32s,
            f16s,
            dtype,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
            values,
        }
    }

    fn view(&self) -> MatRef {
        let ptr = match self.dtype {
            // SAFETY: offset < len.
            Dtype::F32 => ElemPtr::F32(unsafe { self.f32s.as_ptr().add(self.offset) }),
            // SAFETY: offset < len.
            Dtype::F16 => ElemPtr::F16(unsafe { self.f16s.as_ptr().add(self.offset) }),
        };
        MatRef {
            ptr,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    fn at(&self, row: usize, col: usize) -> f32 {
        self.values[row * self.cols + col]
    }
}

/// A test output with sentinel-filled padding.
struct Output {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    dtype: Dtype,
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
    /// Initial values of the view's cells (for accumulate).
    initial: Vec<f32>,
}

const SENTINEL: f32 = -12345.0;

impl Output {
    fn new(
        rng: &mut Rng,
        rows: usize,
        cols: usize,
        dtype: Dtype,
        layout: Layout,
        accumulate: bool,
    ) -> Output {
        let (offset, row_stride, col_stride, len) = strides(layout, rows, cols);
        let mut f32s = vec![SENTINEL; len];
        let mut initial = vec![0f32; rows * cols];
        for row in 0..rows {
            for col in 0..cols {
                // Without accumulate the old C must be ignored: fill it with NaN.
                let value = if accumulate { rng.next() } else { f32::NAN };
                initial[row * cols + col] = value;
                f32s[offset + row * row_stride as usize + col * col_stride as usize] = value;
            }
        }
        let f16s = f32s.iter().map(|&v| f16::from_f32(v)).collect();
        Output {
            f32s,
            f16s,
            dtype,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
            initial,
        }
    }

    fn view(&mut self) -> MatMut {
        let ptr = match self.dtype {
            // SAFETY: offset < len.
            Dtype::F32 => OutPtr::F32(unsafe { self.f32s.as_mut_ptr().add(self.offset) }),
            // SAFETY: offset < len.
            Dtype::F16 => OutPtr::F16(unsafe { self.f16s.as_mut_ptr().add(self.offset) }),
        };
        MatMut {
            ptr,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    fn index(&self, row: usize, col: usize) -> usize {
        self.offset + row * self.row_stride as usize + col * self.col_stride as usize
    }

    fn get(&self, row: usize, col: usize) -> f64 {
        let at = self.index(row, col);
        match self.dtype {
            Dtype::F32 => self.f32s[at] as f64,
            Dtype::F16 => self.f16s[at].to_f32() as f64,
        }
    }

    /// Every buffer element outside the view still holds the sentinel.
    fn padding_untouched(&self) -> bool {
        let mut inside = vec![false; self.f32s.len()];
        for row in 0..self.rows {
            for col in 0..self.cols {
                inside[self.index(row, col)] = true;
            }
        }
        (0..inside.len())
            .filter(|&at| !inside[at])
            .all(|at| match self.dtype {
                Dtype::F32 => self.f32s[at] == SENTINEL,
                Dtype::F16 => self.f16s[at] == f16::from_f32(SENTINEL),
            })
    }
}

/// Everything one check needs.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_dtype: Dtype,
    b_dtype: Dtype,
    c_dtype: Dtype,
    a_layout: Layout,
    b_layout: Layout,
    c_layout: Layout,
    packed_b: bool,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            a_dtype: Dtype::F32,
            b_dtype: Dtype::F32,
            c_dtype: Dtype::F32,
            a_layout: Layout::RowMajor,
            b_layout: Layout::RowMajor,
            c_layout: Layout::RowMajor,
            packed_b: false,
        }
    }
}

/// Rounds an operand the way `spec`'s kernel sees it.
fn operand(spec: &GemmSpec, value: f32) -> f64 {
    if KernelId::of(spec.isa, spec.precision) == KernelId::AmxBf16 {
        bf16::from_f32(value).to_f32() as f64
    } else {
        value as f64
    }
}

/// Compares `c` with the f64 reference for batch entry data `a`, `b`; returns mismatch count
/// and prints a grid of the failing cells.
fn check_output(spec: &GemmSpec, label: &str, a: &Input, b: &Input, c: &Output, k: usize) -> usize {
    let per_k = if KernelId::of(spec.isa, spec.precision) == KernelId::AmxBf16 {
        tol::BF16_ACC_PER_K
    } else {
        tol::F32_PER_K
    };
    let (m, n) = (c.rows, c.cols);
    let mut bad = vec![false; m * n];
    let mut first = Vec::new();
    for row in 0..m {
        for col in 0..n {
            let mut sum = 0f64;
            let mut scale = 0f64;
            for inner in 0..k {
                let product = operand(spec, a.at(row, inner)) * operand(spec, b.at(inner, col));
                sum += product;
                scale += product.abs();
            }
            let initial = c.initial[row * n + col] as f64;
            if spec.accumulate {
                sum += initial;
                scale += initial.abs();
            }
            let mut tolerance = (k as f64 + 2.0) * per_k * scale + tol::ABS_FLOOR;
            if c.dtype == Dtype::F16 {
                tolerance += sum.abs() * tol::F16_OUT_REL + tol::F16_OUT_ABS;
            }
            let got = c.get(row, col);
            let within = (got - sum).abs() <= tolerance;
            if !within {
                bad[row * n + col] = true;
                if first.len() < 5 {
                    first.push(format!(
                        "  C[{row},{col}] = {got}, expected {sum} (tolerance {tolerance:e})"
                    ));
                }
            }
        }
    }
    let n_bad = bad.iter().filter(|&&b| b).count();
    if n_bad > 0 {
        eprintln!("{label}: {n_bad} of {} cells wrong", m * n);
        for line in &first {
            eprintln!("{line}");
        }
        for row in 0..m.min(48) {
            let line: String = (0..n.min(96))
                .map(|col| if bad[row * n + col] { 'X' } else { '.' })
                .collect();
            eprintln!("  {line}");
        }
    }
    if !c.padding_untouched() {
        eprintln!("{label}: C padding was overwritten");
        return n_bad + 1;
    }
    n_bad
}

/// Runs one case on `pool`; panics with a description when it fails.
fn check(spec: &GemmSpec, pool: &Pool, case: Case, seed: u64) {
    let mut rng = Rng(seed | 1);
    let a = Input::new(&mut rng, case.m, case.k, case.a_dtype, case.a_layout);
    let b = Input::new(&mut rng, case.k, case.n, case.b_dtype, case.b_layout);
    let mut c = Output::new(
        &mut rng,
        case.m,
        case.n,
        case.c_dtype,
        case.c_layout,
        spec.accumulate,
    );
    let c_view = c.view();
    if case.packed_b {
        // Pack garbage first, then repack the real B into the same memory.
        let other = Input::new(&mut rng, case.k, case.n, Dtype::F32, Layout::RowMajor);
        // SAFETY: views of live buffers; C is disjoint from A and B.
        unsafe {
            let mut packed = PackedB::pack(spec, other.view());
            assert_eq!((packed.k(), packed.n()), (case.k, case.n));
            packed.repack(b.view());
            gemm_packed_b(spec, pool, a.view(), &packed, c_view);
        }
    } else {
        // SAFETY: views of live buffers; C is disjoint from A and B.
        unsafe { gemm(spec, pool, a.view(), b.view(), c_view) };
    }
    let label = format!(
        "{} {:?} {:?}",
        kernel_name(spec.isa, spec.precision),
        spec,
        case
    );
    let n_bad = check_output(spec, &label, &a, &b, &c, case.k);
    assert_eq!(n_bad, 0, "{label} failed");
}

/// The host's tier, or None after logging the skip.
fn tier(isa: Isa) -> Option<Isa> {
    if cpu::isa_available(isa) {
        Some(isa)
    } else {
        eprintln!("gemm: skipping tier {isa} (not available on this host)");
        None
    }
}

fn specs(isa: Isa) -> [GemmSpec; 2] {
    [Precision::Exact, Precision::Fast].map(|precision| GemmSpec {
        isa,
        precision,
        accumulate: false,
    })
}

/// MR, NR and KU of the kernel `spec` runs.
fn geometry(spec: &GemmSpec) -> (usize, usize, usize) {
    with_kernel!(KernelId::of(spec.isa, spec.precision), K => (K::MR, K::NR, K::KU))
}

fn edge_sizes(tile: usize) -> Vec<usize> {
    let mut sizes = vec![1, 7, 13, 31, tile - 1, tile, tile + 1];
    sizes.retain(|&size| size > 0);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

fn sizes_around_tiles(isa: Isa) {
    let pool = Pool::new(1);
    for spec in specs(isa) {
        let (mr, nr, ku) = geometry(&spec);
        let ks = edge_sizes(ku.max(8))
            .into_iter()
            .chain([64, 100])
            .collect::<Vec<_>>();
        for m in edge_sizes(mr) {
            for n in edge_sizes(nr) {
                for &k in &ks {
                    check(
                        &spec,
                        &pool,
                        Case::new(m, n, k),
                        (m * 1000 + n * 10 + k) as u64,
                    );
                }
            }
        }
    }
}

/// Sizes around the tiles of the kernel a deep product runs (on Amx/Fast the 32 × 48 one):
/// m and n at tile − 1, tile, tile + 1, k just past one block and at two blocks + 1.
fn deep_sizes_around_tiles(isa: Isa) {
    let pool = Pool::new(2);
    for spec in specs(isa) {
        let kc = with_kernel!(KernelId::of(spec.isa, spec.precision), K => K::KC);
        let deep = KernelId::for_shape(spec.isa, spec.precision, kc + 1);
        let (mr, nr) = with_kernel!(deep, K => (K::MR, K::NR));
        for m in [1, mr - 1, mr, mr + 1] {
            for n in [1, nr - 1, nr, nr + 1, 2 * nr + 1] {
                for k in [kc + 1, kc + 33] {
                    check(&spec, &pool, Case::new(m, n, k), (m * 100 + n + k) as u64);
                }
            }
        }
    }
}

fn larger_than_blocking(isa: Isa) {
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads);
        for spec in specs(isa) {
            check(&spec, &pool, Case::new(300, 530, 700), 42 + threads as u64);
            // Many column blocks: the shared packed-A path.
            check(&spec, &pool, Case::new(70, 1500, 90), 43);
            // More than two `kc` blocks (C reloaded from its tile or scratch), and more A
            // panels per item than the B-outer prefetch slices.
            let (mr, nr, kc) =
                with_kernel!(KernelId::of(spec.isa, spec.precision), K => (K::MR, K::NR, K::KC));
            check(
                &spec,
                &pool,
                Case::new(9 * mr + 3, 2 * nr + 5, 2 * kc + 37),
                44,
            );
        }
    }
}

fn strided_and_transposed(isa: Isa) {
    let pool = Pool::new(2);
    let layouts = [Layout::RowMajor, Layout::ColMajor, Layout::Padded];
    for spec in specs(isa) {
        for a_layout in layouts {
            for b_layout in layouts {
                for c_layout in layouts {
                    for (m, n, k) in [(37, 45, 70), (5, 3, 33)] {
                        let case = Case {
                            a_layout,
                            b_layout,
                            c_layout,
                            ..Case::new(m, n, k)
                        };
                        check(&spec, &pool, case, 7);
                    }
                }
            }
        }
    }
}

fn half_inputs_and_outputs(isa: Isa) {
    let pool = Pool::new(2);
    for spec in specs(isa) {
        for (a_dtype, b_dtype, c_dtype) in [
            (Dtype::F16, Dtype::F16, Dtype::F32),
            (Dtype::F16, Dtype::F32, Dtype::F16),
            (Dtype::F32, Dtype::F16, Dtype::F16),
            (Dtype::F16, Dtype::F16, Dtype::F16),
        ] {
            for (a_layout, b_layout, c_layout) in [
                (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor),
                (Layout::ColMajor, Layout::ColMajor, Layout::ColMajor),
                (Layout::Padded, Layout::Padded, Layout::Padded),
            ] {
                for (m, n, k) in [(33, 65, 47), (300, 70, 530)] {
                    let case = Case {
                        a_dtype,
                        b_dtype,
                        c_dtype,
                        a_layout,
                        b_layout,
                        c_layout,
                        ..Case::new(m, n, k)
                    };
                    check(&spec, &pool, case, 11);
                }
            }
        }
    }
}

fn accumulate_mode(isa: Isa) {
    let pool = Pool::new(2);
    for spec in specs(isa) {
        let spec = GemmSpec {
            accumulate: true,
            ..spec
        };
        for c_layout in [Layout::RowMajor, Layout::ColMajor, Layout::Padded] {
            for (m, n, k) in [(1, 1, 1), (29, 70, 45), (100, 64, 800)] {
                check(
                    &spec,
                    &pool,
                    Case {
                        c_layout,
                        ..Case::new(m, n, k)
                    },
                    5,
                );
                check(
                    &spec,
                    &pool,
                    Case {
                        c_layout,
                        packed_b: true,
                        ..Case::new(m, n, k)
                    },
                    6,
                );
            }
        }
    }
}

fn packed_b(isa: Isa) {
    let pool = Pool::new(2);
    for spec in specs(isa) {
        for b_layout in [Layout::RowMajor, Layout::ColMajor, Layout::Padded] {
            for b_dtype in [Dtype::F32, Dtype::F16] {
                for (m, n, k) in [
                    (1, 1, 1),
                    (13, 31, 7),
                    (300, 530, 700),
                    (64, 96, 64),
                    (40, 100, 2100),
                ] {
                    let case = Case {
                        b_layout,
                        b_dtype,
                        packed_b: true,
                        ..Case::new(m, n, k)
                    };
                    check(&spec, &pool, case, 9);
                }
            }
        }
    }
}

fn batched_with_broadcast(isa: Isa) {
    let pool = Pool::new(2);
    let (batch, m, n, k) = (5, 37, 41, 29);
    for spec in specs(isa) {
        for (a_broadcast, b_broadcast) in [(false, false), (true, false), (false, true)] {
            let mut rng = Rng(99);
            let a_entries: Vec<Input> = (0..batch)
                .map(|_| Input::new(&mut rng, m, k, Dtype::F32, Layout::RowMajor))
                .collect();
            let b_entries: Vec<Input> = (0..batch)
                .map(|_| Input::new(&mut rng, k, n, Dtype::F16, Layout::RowMajor))
                .collect();
            // Concatenate the entries into one buffer each.
            let a_all: Vec<f32> = a_entries
                .iter()
                .flat_map(|input| input.f32s.clone())
                .collect();
            let b_all: Vec<f16> = b_entries
                .iter()
                .flat_map(|input| input.f16s.clone())
                .collect();
            let mut c_all = vec![f32::NAN; batch * m * n];
            let a_stride = if a_broadcast { 0 } else { (m * k) as isize };
            let b_stride = if b_broadcast { 0 } else { (k * n) as isize };
            // SAFETY: every batch entry's view lies inside the concatenated buffers.
            unsafe {
                gemm_batched(
                    &spec,
                    &pool,
                    batch,
                    MatRef::f32_row_major(a_all.as_ptr(), m, k),
                    a_stride,
                    MatRef::f16_row_major(b_all.as_ptr(), k, n),
                    b_stride,
                    MatMut::f32_row_major(c_all.as_mut_ptr(), m, n),
                    (m * n) as isize,
                );
            }
            for entry in 0..batch {
                let a = &a_entries[if a_broadcast { 0 } else { entry }];
                let b = &b_entries[if b_broadcast { 0 } else { entry }];
                let mut rng = Rng(1);
                let mut c = Output::new(&mut rng, m, n, Dtype::F32, Layout::RowMajor, false);
                c.f32s
                    .copy_from_slice(&c_all[entry * m * n..(entry + 1) * m * n]);
                let label = format!(
                    "batched {spec:?} entry {entry} a_bcast={a_broadcast} b_bcast={b_broadcast}"
                );
                assert_eq!(
                    check_output(&spec, &label, a, b, &c, k),
                    0,
                    "{label} failed"
                );
            }
        }
    }
}

fn degenerate_shapes(isa: Isa) {
    let pool = Pool::new(2);
    for spec in specs(isa) {
        // k = 0: C becomes zero (or stays, with accumulate).
        let mut c = vec![f32::NAN; 6];
        let a = [0f32; 0];
        // SAFETY: A and B are empty; C is a live 2 × 3 buffer.
        unsafe {
            gemm(
                &spec,
                &pool,
                MatRef::f32_row_major(a.as_ptr(), 2, 0),
                MatRef::f32_row_major(a.as_ptr(), 0, 3),
                MatMut::f32_row_major(c.as_mut_ptr(), 2, 3),
            );
        }
        assert!(c.iter().all(|&v| v == 0.0));
        let mut c = vec![1.5f32; 6];
        let accumulate = GemmSpec {
            accumulate: true,
            ..spec
        };
        // SAFETY: as above.
        unsafe {
            gemm(
                &accumulate,
                &pool,
                MatRef::f32_row_major(a.as_ptr(), 2, 0),
                MatRef::f32_row_major(a.as_ptr(), 0, 3),
                MatMut::f32_row_major(c.as_mut_ptr(), 2, 3),
            );
        }
        assert!(c.iter().all(|&v| v == 1.5));
        // m = 0 and n = 0 touch nothing.
        let b = [1f32; 4];
        // SAFETY: empty C; A/B views inside `b`.
        unsafe {
            gemm(
                &spec,
                &pool,
                MatRef::f32_row_major(b.as_ptr(), 0, 2),
                MatRef::f32_row_major(b.as_ptr(), 2, 2),
                MatMut::f32_row_major(c.as_mut_ptr(), 0, 2),
            );
        }
        // Broadcast views (stride 0) as A: every row the same.
        let row = [0.5f32, -1.0, 2.0];
        let a_view = MatRef {
            row_stride: 0,
            ..MatRef::f32_row_major(row.as_ptr(), 4, 3)
        };
        let b_data = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0f32; 8];
        // SAFETY: every view element lies inside its buffer.
        unsafe {
            gemm(
                &spec,
                &pool,
                a_view,
                MatRef::f32_row_major(b_data.as_ptr(), 3, 2),
                MatMut::f32_row_major(out.as_mut_ptr(), 4, 2),
            );
        }
        for pair in out.chunks(2) {
            assert_eq!(pair, &[0.5 - 3.0 + 10.0, 1.0 - 4.0 + 12.0]);
        }
    }
}

macro_rules! tier_suite {
    ($($module:ident => $isa:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn sizes_around_tiles() {
                if let Some(isa) = tier($isa) {
                    super::sizes_around_tiles(isa);
                }
            }

            #[test]
            fn deep_sizes_around_tiles() {
                if let Some(isa) = tier($isa) {
                    super::deep_sizes_around_tiles(isa);
                }
            }

            #[test]
            fn larger_than_blocking() {
                if let Some(isa) = tier($isa) {
                    super::larger_than_blocking(isa);
                }
            }

            #[test]
            fn strided_and_transposed() {
                if let Some(isa) = tier($isa) {
                    super::strided_and_transposed(isa);
                }
            }

            #[test]
            fn half_inputs_and_outputs() {
                if let Some(isa) = tier($isa) {
                    super::half_inputs_and_outputs(isa);
                }
            }

            #[test]
            fn accumulate_mode() {
                if let Some(isa) = tier($isa) {
                    super::accumulate_mode(isa);
                }
            }

            #[test]
            fn packed_b() {
                if let Some(isa) = tier($isa) {
                    super::packed_b(isa);
                }
            }

            #[test]
            fn batched_with_broadcast() {
                if let Some(isa) = tier($isa) {
                    super::batched_with_broadcast(isa);
                }
            }

            #[test]
            fn degenerate_shapes() {
                if let Some(isa) = tier($isa) {
                    super::degenerate_shapes(isa);
                }
            }
        }
    )*};
}

tier_suite! {
    generic => Isa::Generic;
    avx2 => Isa::Avx2;
    avx512 => Isa::Avx512;
    amx => Isa::Amx;
}

#[test]
fn kernel_names_follow_the_pattern() {
    assert_eq!(
        kernel_name(Isa::Generic, Precision::Exact),
        "generic_gemm_f32_4x8"
    );
    assert_eq!(
        kernel_name(Isa::Avx2, Precision::Fast),
        "avx2_gemm_f32_6x16"
    );
    assert_eq!(
        kernel_name(Isa::Avx512, Precision::Fast),
        "avx512_gemm_f32_12x32"
    );
    assert_eq!(
        kernel_name(Isa::Amx, Precision::Exact),
        "avx512_gemm_f32_12x32"
    );
    assert_eq!(
        kernel_name(Isa::Amx, Precision::Fast),
        "amx_gemm_bf16_32x32"
    );
    assert_eq!(
        kernel_name_for(Isa::Amx, Precision::Fast, 768),
        "amx_gemm_bf16_32x32"
    );
    assert_eq!(
        kernel_name_for(Isa::Amx, Precision::Fast, 769),
        "amx_gemm_bf16_32x48"
    );
    assert_eq!(
        kernel_name_for(Isa::Avx512, Precision::Fast, 5000),
        "avx512_gemm_f32_12x32"
    );
}

#[test]
fn packed_b_for_another_kernel_is_rejected() {
    let available: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|&isa| cpu::isa_available(isa))
        .collect();
    if available.len() < 2 {
        eprintln!("gemm: skipping the mismatched PackedB check (one tier only)");
        return;
    }
    let b = [1f32; 4];
    let generic = GemmSpec {
        isa: Isa::Generic,
        precision: Precision::Exact,
        accumulate: false,
    };
    let other = GemmSpec {
        isa: available[1],
        ..generic
    };
    // SAFETY: a live 2 × 2 buffer.
    let packed = unsafe { PackedB::pack(&generic, MatRef::f32_row_major(b.as_ptr(), 2, 2)) };
    let mut c = [0f32; 4];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: live buffers; the call is expected to refuse before touching them.
        unsafe {
            gemm_packed_b(
                &other,
                Pool::global(),
                MatRef::f32_row_major(b.as_ptr(), 2, 2),
                &packed,
                MatMut::f32_row_major(c.as_mut_ptr(), 2, 2),
            )
        }
    }));
    assert!(result.is_err());
}

#[test]
fn repack_converting_equals_convert_then_repack() {
    let pool = Pool::new(3);
    for isa in Isa::ALL.into_iter().filter_map(tier) {
        for spec in specs(isa) {
            for (k, n) in [(1, 1), (37, 530), (300, 97)] {
                for transposed in [false, true] {
                    let mut rng = Rng(k as u64 * 31 + n as u64);
                    let values: Vec<f32> = (0..k * n).map(|_| rng.next() * 3.0).collect();
                    let mut copy = vec![f16::from_f32(f32::NAN); k * n];
                    let (b, copy_view) = if transposed {
                        (
                            MatRef::f32_row_major(values.as_ptr(), n, k).t(),
                            MatMut::f16_row_major(copy.as_mut_ptr(), n, k).t(),
                        )
                    } else {
                        (
                            MatRef::f32_row_major(values.as_ptr(), k, n),
                            MatMut::f16_row_major(copy.as_mut_ptr(), k, n),
                        )
                    };
                    // SAFETY: the views cover the live, disjoint `values` and `copy`.
                    let mut fused = unsafe { PackedB::pack_with(&spec, &pool, b) };
                    // SAFETY: as above.
                    unsafe { fused.repack_converting_with(&pool, b, copy_view) };
                    for (got, &value) in copy.iter().zip(&values) {
                        assert_eq!(got.to_bits(), f16::from_f32(value).to_bits());
                    }
                    // SAFETY: `copy` is live and no longer written.
                    let reference = unsafe { PackedB::pack_with(&spec, &pool, copy_view.as_ref()) };
                    let m = 19;
                    let a: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
                    let mut c_fused = vec![0f32; m * n];
                    let mut c_reference = vec![1f32; m * n];
                    let a_view = MatRef::f32_row_major(a.as_ptr(), m, k);
                    // SAFETY: the views cover live, disjoint buffers of the stated shapes.
                    unsafe {
                        gemm_packed_b(
                            &spec,
                            &pool,
                            a_view,
                            &fused,
                            MatMut::f32_row_major(c_fused.as_mut_ptr(), m, n),
                        );
                        gemm_packed_b(
                            &spec,
                            &pool,
                            a_view,
                            &reference,
                            MatMut::f32_row_major(c_reference.as_mut_ptr(), m, n),
                        );
                    }
                    assert!(
                        c_fused
                            .iter()
                            .zip(&c_reference)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa} {:?} k {k} n {n} transposed {transposed}",
                        spec.precision
                    );
                }
            }
        }
    }
}

#[test]
fn safe_slice_gemm_matches_naive_in_every_layout() {
    let (m, n, k) = (13, 7, 31);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.5)
        .collect();
    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k)
                .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                .sum();
        }
    }
    let pool = Pool::new(2);
    for isa in Isa::ALL
        .iter()
        .copied()
        .filter(|&isa| cpu::isa_available(isa))
    {
        for (a_src, a_layout, b_src, b_layout) in [
            (&a, SliceLayout::Plain, &b, SliceLayout::Plain),
            (&at, SliceLayout::Transposed, &b, SliceLayout::Plain),
            (&a, SliceLayout::Plain, &bt, SliceLayout::Transposed),
            (&at, SliceLayout::Transposed, &bt, SliceLayout::Transposed),
        ] {
            let spec = GemmSpec {
                isa,
                precision: Precision::Exact,
                accumulate: true,
            };
            let mut c = vec![1.0f32; m * n];
            gemm_f32(
                &spec,
                &pool,
                (m, n, k),
                a_src,
                a_layout,
                b_src,
                b_layout,
                &mut c,
            );
            for (idx, (&got, &exact)) in c.iter().zip(&want).enumerate() {
                let err = (f64::from(got) - (exact + 1.0)).abs();
                assert!(
                    err < 1e-4,
                    "{isa:?} {a_layout:?}/{b_layout:?} element {idx}: {got} vs {}",
                    exact + 1.0
                );
            }
        }
    }
}

#[test]
fn batched_packed_b_equals_batched_broadcast_bit_for_bit() {
    let pool = Pool::new(2);
    for isa in Isa::ALL.into_iter().filter_map(tier) {
        for spec in specs(isa) {
            for (batch, m, n, k) in [(1, 1, 1, 1), (3, 37, 70, 45), (2, 64, 96, 800)] {
                let mut rng = Rng((batch * 1000 + m * 31 + n + k) as u64);
                let a: Vec<f32> = (0..batch * m * k).map(|_| rng.next()).collect();
                let b: Vec<f16> = (0..k * n).map(|_| f16::from_f32(rng.next())).collect();
                // A transposed B view (column-major storage), as the engine's weights often are.
                let b_view = MatRef::f16_row_major(b.as_ptr(), n, k).t();
                let a_view = MatRef::f32_row_major(a.as_ptr(), m, k);
                let mut c_raw = vec![0f32; batch * m * n];
                let mut c_packed = vec![1f32; batch * m * n];
                let (mn, mk) = ((m * n) as isize, (m * k) as isize);
                let before = raw_b_products_on_this_thread();
                // SAFETY: every view covers a live buffer of the stated shape; the C buffers
                // are distinct from A and B and from each other.
                unsafe {
                    gemm_batched(
                        &spec,
                        &pool,
                        batch,
                        a_view,
                        mk,
                        b_view,
                        0,
                        MatMut::f32_row_major(c_raw.as_mut_ptr(), m, n),
                        mn,
                    );
                }
                assert_eq!(raw_b_products_on_this_thread(), before + 1);
                // SAFETY: as above.
                unsafe {
                    let packed = PackedB::pack_with(&spec, &pool, b_view);
                    gemm_batched_packed_b(
                        &spec,
                        &pool,
                        batch,
                        a_view,
                        mk,
                        &packed,
                        MatMut::f32_row_major(c_packed.as_mut_ptr(), m, n),
                        mn,
                    );
                }
                assert_eq!(
                    raw_b_products_on_this_thread(),
                    before + 1,
                    "a packed B is not packed again"
                );
                assert!(
                    c_raw
                        .iter()
                        .zip(&c_packed)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa} {:?} batch {batch} m {m} n {n} k {k}",
                    spec.precision
                );
            }
        }
    }
}

/// `C (+)= A · B` for a batch with a broadcast A, once from the raw A and once from a
/// [`PackedA`] (packed from garbage first, then repacked): both must agree bit for bit, the
/// packed product must pack no A, and the raw one must match the f64 reference.
#[allow(
    clippy::too_many_arguments,
    reason = "one case of the packed-A comparison"
)]
fn check_packed_a(
    spec: &GemmSpec,
    pool: &Pool,
    batch: usize,
    (m, n, k): (usize, usize, usize),
    a_dtype: Dtype,
    a_layout: Layout,
    c_dtype: Dtype,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let a = Input::new(&mut rng, m, k, a_dtype, a_layout);
    let b_entries: Vec<Input> = (0..batch)
        .map(|_| Input::new(&mut rng, k, n, Dtype::F16, Layout::RowMajor))
        .collect();
    let b_all: Vec<f16> = b_entries
        .iter()
        .flat_map(|input| input.f16s.clone())
        .collect();
    let initial: Vec<f32> = (0..batch * m * n).map(|_| rng.next()).collect();
    let (mn, kn) = ((m * n) as isize, (k * n) as isize);
    let b_view = MatRef::f16_row_major(b_all.as_ptr(), k, n);
    let label = format!(
        "packed A {} {spec:?} batch {batch} m {m} n {n} k {k} {a_dtype:?} {a_layout:?} C {c_dtype:?}",
        kernel_name_for(spec.isa, spec.precision, k)
    );
    let run = |packed: Option<&PackedA>| -> (Vec<f32>, Vec<f16>) {
        let mut c32 = initial.clone();
        let mut c16: Vec<f16> = initial.iter().map(|&v| f16::from_f32(v)).collect();
        let c_view = match c_dtype {
            Dtype::F32 => MatMut::f32_row_major(c32.as_mut_ptr(), m, n),
            Dtype::F16 => MatMut::f16_row_major(c16.as_mut_ptr(), m, n),
        };
        // SAFETY: every view covers a live buffer of the stated shape (batch entries laid end
        // to end); C is distinct from A and B.
        unsafe {
            match packed {
                Some(packed) => {
                    gemm_batched_packed_a(spec, pool, batch, packed, b_view, kn, c_view, mn)
                }
                None => gemm_batched(spec, pool, batch, a.view(), 0, b_view, kn, c_view, mn),
            }
        }
        (c32, c16)
    };
    let raw_before = raw_a_products_on_this_thread();
    let raw = run(None);
    let product_ran = m > 0 && n > 0 && k > 0 && batch > 0;
    assert_eq!(
        raw_a_products_on_this_thread(),
        raw_before + u64::from(product_ran),
        "{label}: the raw product packs A"
    );
    let garbage = Input::new(&mut rng, m, k, Dtype::F32, Layout::RowMajor);
    // SAFETY: views of live buffers, not written during the calls.
    let packed = unsafe {
        let mut packed = PackedA::pack_with(spec, pool, garbage.view());
        packed.repack_with(pool, a.view());
        packed
    };
    assert_eq!((packed.m(), packed.k()), (m, k));
    assert_eq!(
        packed.kernel_name(),
        kernel_name_for(spec.isa, spec.precision, k)
    );
    let packed_before = raw_a_products_on_this_thread();
    let prepacked = run(Some(&packed));
    assert_eq!(
        raw_a_products_on_this_thread(),
        packed_before,
        "{label}: a packed A is packed again"
    );
    let same = match c_dtype {
        Dtype::F32 => raw
            .0
            .iter()
            .zip(&prepacked.0)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        Dtype::F16 => raw
            .1
            .iter()
            .zip(&prepacked.1)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
    };
    assert!(
        same,
        "{label}: the packed-A product differs from the raw one"
    );
    // The raw product itself against the f64 reference (entry by entry; small cases only:
    // the big ones are covered by the suites above, and here only the bit equality matters).
    if batch * m * n * k > 300_000 {
        return;
    }
    for (entry, b) in b_entries.iter().enumerate() {
        let mut out = Output::new(&mut rng, m, n, c_dtype, Layout::RowMajor, spec.accumulate);
        let cells = entry * m * n..(entry + 1) * m * n;
        out.initial.copy_from_slice(&initial[cells.clone()]);
        match c_dtype {
            Dtype::F32 => out.f32s.copy_from_slice(&raw.0[cells]),
            Dtype::F16 => out.f16s.copy_from_slice(&raw.1[cells]),
        }
        let entry_label = format!("{label} entry {entry}");
        assert_eq!(
            check_output(spec, &entry_label, &a, b, &out, k),
            0,
            "{entry_label} failed"
        );
    }
}

#[test]
fn packed_a_equals_raw_a_bit_for_bit_on_every_tier() {
    for threads in [1, 3] {
        let pool = Pool::new(threads);
        for isa in Isa::ALL.into_iter().filter_map(tier) {
            for precision in [Precision::Exact, Precision::Fast] {
                for accumulate in [false, true] {
                    let spec = GemmSpec {
                        isa,
                        precision,
                        accumulate,
                    };
                    let (mr, nr, _) = geometry(&spec);
                    for (batch, shape) in [
                        (1, (1, 1, 1)),
                        (1, (13, 31, 7)),
                        (2, (mr + 1, nr - 1, 1)),
                        (1, (mr, 3 * nr + 5, 64)),
                        (3, (37, 70, 45)),
                        (1, (300, 530, 700)),
                        (2, (40, 100, 2100)),
                        (1, (0, 4, 9)),
                        (1, (5, 4, 0)),
                    ] {
                        let big = shape.0 * shape.1 * shape.2 > 1_000_000;
                        let a_forms = [
                            (Dtype::F32, Layout::RowMajor),
                            (Dtype::F16, Layout::ColMajor),
                            (Dtype::F32, Layout::Padded),
                        ];
                        // One form for the big shapes keeps the suite quick in debug builds.
                        for &(a_dtype, a_layout) in &a_forms[..if big { 1 } else { 3 }] {
                            let c_dtypes: &[Dtype] = if accumulate {
                                &[Dtype::F32]
                            } else {
                                &[Dtype::F32, Dtype::F16]
                            };
                            for &c_dtype in c_dtypes {
                                let seed = (shape.0 * 7919 + shape.1 * 31 + shape.2) as u64;
                                check_packed_a(
                                    &spec, &pool, batch, shape, a_dtype, a_layout, c_dtype, seed,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_a_repack_converting_equals_convert_then_repack() {
    let pool = Pool::new(3);
    for isa in Isa::ALL.into_iter().filter_map(tier) {
        for spec in specs(isa) {
            for (m, k) in [(1, 1), (530, 37), (97, 300), (64, 1000)] {
                for transposed in [false, true] {
                    let mut rng = Rng(m as u64 * 31 + k as u64);
                    let values: Vec<f32> = (0..m * k).map(|_| rng.next() * 3.0).collect();
                    let mut copy = vec![f16::from_f32(f32::NAN); m * k];
                    let (a, copy_view) = if transposed {
                        (
                            MatRef::f32_row_major(values.as_ptr(), k, m).t(),
                            MatMut::f16_row_major(copy.as_mut_ptr(), k, m).t(),
                        )
                    } else {
                        (
                            MatRef::f32_row_major(values.as_ptr(), m, k),
                            MatMut::f16_row_major(copy.as_mut_ptr(), m, k),
                        )
                    };
                    // SAFETY: the views cover the live, disjoint `values` and `copy`.
                    let mut fused = unsafe { PackedA::pack_with(&spec, &pool, a) };
                    // SAFETY: as above.
                    unsafe { fused.repack_converting_with(&pool, a, copy_view) };
                    for (got, &value) in copy.iter().zip(&values) {
                        assert_eq!(got.to_bits(), f16::from_f32(value).to_bits());
                    }
                    // SAFETY: `copy` is live and no longer written.
                    let reference = unsafe { PackedA::pack_with(&spec, &pool, copy_view.as_ref()) };
                    let n = 19;
                    let b: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
                    let mut c_fused = vec![0f32; m * n];
                    let mut c_reference = vec![1f32; m * n];
                    let b_view = MatRef::f32_row_major(b.as_ptr(), k, n);
                    // SAFETY: the views cover live, disjoint buffers of the stated shapes.
                    unsafe {
                        gemm_packed_a(
                            &spec,
                            &pool,
                            &fused,
                            b_view,
                            MatMut::f32_row_major(c_fused.as_mut_ptr(), m, n),
                        );
                        gemm_packed_a(
                            &spec,
                            &pool,
                            &reference,
                            b_view,
                            MatMut::f32_row_major(c_reference.as_mut_ptr(), m, n),
                        );
                    }
                    assert!(
                        c_fused
                            .iter()
                            .zip(&c_reference)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa} {:?} m {m} k {k} transposed {transposed}",
                        spec.precision
                    );
                }
            }
        }
    }
}

#[test]
fn packed_a_for_another_kernel_or_shape_is_rejected() {
    let a = [1f32; 6];
    let b = [1f32; 6];
    let generic = GemmSpec {
        isa: Isa::Generic,
        precision: Precision::Exact,
        accumulate: false,
    };
    // SAFETY: a live 2 × 3 buffer.
    let packed = unsafe { PackedA::pack(&generic, MatRef::f32_row_major(a.as_ptr(), 2, 3)) };
    let mut c = [0f32; 4];
    let wrong_shape = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: live buffers; the call is expected to refuse before touching them (B has 2
        // rows for A's 3 columns).
        unsafe {
            gemm_packed_a(
                &generic,
                Pool::global(),
                &packed,
                MatRef::f32_row_major(b.as_ptr(), 2, 3),
                MatMut::f32_row_major(c.as_mut_ptr(), 2, 2),
            )
        }
    }));
    assert!(wrong_shape.is_err());
    let available: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|&isa| cpu::isa_available(isa))
        .collect();
    if available.len() < 2 {
        eprintln!("gemm: skipping the mismatched PackedA kernel check (one tier only)");
        return;
    }
    let other = GemmSpec {
        isa: available[1],
        ..generic
    };
    let wrong_kernel = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: live buffers; the call is expected to refuse before touching them.
        unsafe {
            gemm_packed_a(
                &other,
                Pool::global(),
                &packed,
                MatRef::f32_row_major(b.as_ptr(), 3, 2),
                MatMut::f32_row_major(c.as_mut_ptr(), 2, 2),
            )
        }
    }));
    assert!(wrong_kernel.is_err());
    assert_eq!(c, [0f32; 4]);
}

/// The work split (coarse items, split further when there are few items per thread) never
/// changes a result: every tile is computed by the same kernel calls in the same `kc` order
/// whichever task owns it, so one thread and two or three agree bit for bit, on every tier,
/// for raw, packed-A and packed-B products whose items are split across threads, with edges,
/// an f16 C and accumulation.
#[test]
fn thread_count_never_changes_a_result() {
    let pools = [Pool::new(1), Pool::new(2), Pool::new(3)];
    for isa in Isa::ALL.into_iter().filter_map(tier) {
        for precision in [Precision::Exact, Precision::Fast] {
            for accumulate in [false, true] {
                let spec = GemmSpec {
                    isa,
                    precision,
                    accumulate,
                };
                // Items split by rows and by columns (the B-outer 32 × 48 AMX kernel once k
                // passes one block); k over one or several `kc` blocks.
                for (m, n, k) in [(200, 610, 300), (610, 200, 300), (101, 530, 1100)] {
                    let mut rng = Rng((m * 31 + n * 7 + k) as u64);
                    let a = Input::new(&mut rng, m, k, Dtype::F32, Layout::RowMajor);
                    let b = Input::new(&mut rng, k, n, Dtype::F16, Layout::ColMajor);
                    let initial: Vec<f32> = (0..m * n).map(|_| rng.next()).collect();
                    let c_dtypes: &[Dtype] = if accumulate {
                        &[Dtype::F32]
                    } else {
                        &[Dtype::F32, Dtype::F16]
                    };
                    for &c_dtype in c_dtypes {
                        // 0: raw operands, 1: packed A, 2: packed B.
                        for form in 0..3 {
                            let results: Vec<Vec<u32>> = pools
                                .iter()
                                .map(|pool| {
                                    let mut c32 = initial.clone();
                                    let mut c16: Vec<f16> =
                                        initial.iter().map(|&v| f16::from_f32(v)).collect();
                                    let c = match c_dtype {
                                        Dtype::F32 => MatMut::f32_row_major(c32.as_mut_ptr(), m, n),
                                        Dtype::F16 => MatMut::f16_row_major(c16.as_mut_ptr(), m, n),
                                    };
                                    // SAFETY: the views cover live buffers of their shapes; C
                                    // is distinct from A and B.
                                    unsafe {
                                        match form {
                                            0 => gemm(&spec, pool, a.view(), b.view(), c),
                                            1 => {
                                                let packed =
                                                    PackedA::pack_with(&spec, pool, a.view());
                                                gemm_packed_a(&spec, pool, &packed, b.view(), c);
                                            }
                                            _ => {
                                                let packed =
                                                    PackedB::pack_with(&spec, pool, b.view());
                                                gemm_packed_b(&spec, pool, a.view(), &packed, c);
                                            }
                                        }
                                    }
                                    match c_dtype {
                                        Dtype::F32 => c32.iter().map(|v| v.to_bits()).collect(),
                                        Dtype::F16 => {
                                            c16.iter().map(|v| u32::from(v.to_bits())).collect()
                                        }
                                    }
                                })
                                .collect();
                            for (threads, result) in [2, 3].iter().zip(&results[1..]) {
                                assert!(
                                    result == &results[0],
                                    "{spec:?} {m}x{n}x{k} C {c_dtype:?} form {form}: {threads} \
                                     threads differ from 1"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
