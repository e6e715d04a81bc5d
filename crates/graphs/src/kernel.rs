//! What a generated kernel is, and how the host fills and reads its buffers.
//!
//! Every buffer is fp16, dense and row-major (mil-spec 8.2). Activations use the channel-first
//! `[1, C, 1, S]` layout: element (channel `c`, token `t`) at `c * S + t`. The host-side helpers
//! here work on `f32` slices; converting to and from fp16 is the bridge's job.

use mil::facts::BlobMap;
use mil::ir::{Program, TensorType};
use milbridge_mil as mil;

/// A function parameter or output of a generated kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSpec {
    /// The MIL parameter name, or the output variable's name.
    pub name: String,
    /// Its type (always fp16 here).
    pub ty: TensorType,
}

impl IoSpec {
    /// Elements in the buffer.
    pub fn numel(&self) -> usize {
        self.ty.numel()
    }

    /// Bytes in the buffer.
    pub fn byte_len(&self) -> usize {
        self.ty.byte_len().unwrap_or(0)
    }
}

/// How a weight matrix is laid out in its buffer, relative to the model's own matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// As the model stores it: `[rows][cols]` = `[out][in]` (vectors: `[len]`).
    Natural,
    /// Its transpose: `[cols][rows]` = `[in][out]` ("input-major", maderix/ANE's `W^T` staging).
    Transposed,
}

/// Where a kernel reads one weight from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightLocation {
    /// Its own function parameter, always in [`Orientation::Natural`] layout.
    Param {
        /// Function parameter index (after the activation parameters).
        index: usize,
        /// The parameter's shape (`[1, rows, cols]` for matrices, a broadcastable shape such as
        /// `[1, dim, 1, 1]` for vectors).
        shape: Vec<usize>,
    },
    /// A section of the packed input ([`GeneratedKernel::packing`]).
    Packed {
        /// Index into [`PackLayout::sections`].
        section: usize,
        /// How the section holds the matrix.
        orientation: Orientation,
    },
    /// A BLOBFILE constant (static kernels): a single fp16 blob at `offset` 64 of `path`.
    Blob {
        /// The path as written in the program (`@model_path/weights/wq.bin`).
        path: String,
        /// The BLOBFILE offset.
        offset: u64,
        /// How the blob holds the matrix.
        orientation: Orientation,
    },
}

/// One model weight a kernel uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    /// The model's name for it: `wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`, `rms_att`, `rms_ffn`,
    /// `rms_final`, `rms` (any RMSNorm vector), `q_norm`, `k_norm`, `embed`.
    pub name: String,
    /// Rows of the model matrix (`out` features; a vector's length).
    pub rows: usize,
    /// Columns of the model matrix (`in` features; 1 for a vector).
    pub cols: usize,
    /// Where the kernel reads it.
    pub location: WeightLocation,
}

impl WeightSpec {
    /// Elements in the model matrix.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
}

/// Along which axis a packed input's sections are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackAxis {
    /// Sections side by side in the last (spatial) dimension: `buf[r * width + offset + c]`
    /// (mil-spec 8.4 (a), training_dynamic's weight packing).
    Spatial,
    /// Sections stacked along channels: `buf[(offset + r) * width + c]` (mil-spec 8.4 (b)).
    Channel,
}

/// What a section holds and how [`pack_input`] expects the caller's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionContent {
    /// Activations, passed channel-first `[rows][cols]` (`[C][S]`).
    Activation,
    /// A weight matrix, passed as the model stores it (`[out][in]`); written transposed when the
    /// orientation is [`Orientation::Transposed`].
    Weight(Orientation),
    /// A weight vector of `rows` elements, written down the section's single column (rows below
    /// it are zero).
    Vector,
}

/// One section of a packed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackSection {
    /// The activation or weight name.
    pub name: String,
    /// First column (spatial packing) or first channel (channel packing).
    pub offset: usize,
    /// Rows (channels) the section covers; spatial sections start at channel 0.
    pub rows: usize,
    /// Columns the section covers; channel sections cover the whole width.
    pub cols: usize,
    /// What it holds.
    pub content: SectionContent,
}

impl PackSection {
    /// Elements the caller passes for this section.
    pub fn numel(&self) -> usize {
        match self.content {
            SectionContent::Vector => self.rows,
            _ => self.rows * self.cols,
        }
    }
}

/// The layout of a packed input `[1, channels, 1, width]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackLayout {
    /// Function parameter index of the packed input (0).
    pub param: usize,
    /// Packing axis.
    pub axis: PackAxis,
    /// Channels of the packed input.
    pub channels: usize,
    /// Width (last dimension) of the packed input.
    pub width: usize,
    /// Sections in packing order.
    pub sections: Vec<PackSection>,
}

impl PackLayout {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<usize> {
        self.sections
            .iter()
            .position(|section| section.name == name)
    }

    /// Elements of the packed buffer.
    pub fn numel(&self) -> usize {
        self.channels * self.width
    }
}

/// One "tap": a named channel range of an output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    /// What it holds (`attn`, `q_rope`, `h1`, `dx`, ...).
    pub name: String,
    /// Output index.
    pub output: usize,
    /// First channel in that output.
    pub channel_offset: usize,
    /// Channels.
    pub channels: usize,
    /// Width of each channel (the sequence length).
    pub seq: usize,
}

impl TapSpec {
    /// The element range inside the output buffer (taps are contiguous, channel-first).
    pub fn range(&self) -> std::ops::Range<usize> {
        self.channel_offset * self.seq..(self.channel_offset + self.channels) * self.seq
    }
}

/// A weight file the program reads through BLOBFILE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobFile {
    /// The path as written in the program.
    pub path: String,
    /// The file bytes (MILBlob v2, mil-spec 7.3.1 layout).
    pub bytes: Vec<u8>,
}

/// A generated kernel: the program, and exactly how the host fills and reads each buffer.
#[derive(Clone, Debug)]
pub struct GeneratedKernel {
    /// maderix/ANE's name for the kernel (`sdpaFwd`, `ffnFused`, `qBwd`, ...).
    pub name: String,
    /// The MIL program (one function `main`, opset ios18).
    pub program: Program,
    /// Activation parameters, in order (function parameters `0..inputs.len()`). In packed mode
    /// this is the single packed input described by [`GeneratedKernel::packing`].
    pub inputs: Vec<IoSpec>,
    /// The weights the kernel reads. In params mode each is a function parameter after the
    /// inputs, in this order (the `idx` of `ane_bridge_write_weight`).
    pub weights: Vec<WeightSpec>,
    /// Outputs, in order.
    pub outputs: Vec<IoSpec>,
    /// How the packed input is laid out (packed and static kernels with several activations).
    pub packing: Option<PackLayout>,
    /// Where each result lives in the outputs.
    pub taps: Vec<TapSpec>,
    /// Constant tables the program reads through BLOBFILE (causal mask, RoPE tables); static
    /// kernels' weight blobs come from [`crate::stories::weight_blobs`].
    pub blobs: Vec<BlobFile>,
}

impl GeneratedKernel {
    /// The tap called `name`.
    pub fn tap(&self, name: &str) -> Option<&TapSpec> {
        self.taps.iter().find(|tap| tap.name == name)
    }

    /// The weight called `name`.
    pub fn weight(&self, name: &str) -> Option<&WeightSpec> {
        self.weights.iter().find(|weight| weight.name == name)
    }

    /// The number of function parameters.
    pub fn n_params(&self) -> usize {
        self.inputs.len()
            + self
                .weights
                .iter()
                .filter(|weight| matches!(weight.location, WeightLocation::Param { .. }))
                .count()
    }

    /// Every function parameter's buffer, in parameter order (activations, then weight
    /// parameters), from named data in natural layouts: activations `[C][S]`, weights as the
    /// model stores them (`[out][in]`, vectors `[len]`). Packed inputs are assembled with
    /// [`pack_input`]; BLOBFILE weights are not parameters (see `stories::weight_blobs`).
    pub fn param_buffers(&self, data: &[(&str, &[f32])]) -> Result<Vec<Vec<f32>>, BufferError> {
        let find = |name: &str, expected: usize| -> Result<&[f32], BufferError> {
            let (_, values) = data
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| BufferError::Missing(name.to_string()))?;
            if values.len() != expected {
                return Err(BufferError::Length {
                    name: name.to_string(),
                    expected,
                    got: values.len(),
                });
            }
            Ok(values)
        };
        let mut buffers = Vec::with_capacity(self.n_params());
        for (index, input) in self.inputs.iter().enumerate() {
            match &self.packing {
                Some(layout) if layout.param == index => {
                    let sections = layout
                        .sections
                        .iter()
                        .map(|section| find(&section.name, section.numel()))
                        .collect::<Result<Vec<_>, _>>()?;
                    buffers.push(pack_input(layout, &sections));
                }
                _ => buffers.push(find(&input.name, input.numel())?.to_vec()),
            }
        }
        for weight in &self.weights {
            if let WeightLocation::Param { .. } = weight.location {
                buffers.push(find(&weight.name, weight.numel())?.to_vec());
            }
        }
        Ok(buffers)
    }

    /// The values of the tap called `name` in the kernel's output buffers.
    pub fn tap_values<'a>(&self, name: &str, outputs: &[&'a [f32]]) -> Option<&'a [f32]> {
        let tap = self.tap(name)?;
        outputs.get(tap.output)?.get(tap.range())
    }

    /// The constant tables as a [`BlobMap`] for `mil::verify` and the bridge.
    pub fn blob_map(&self) -> BlobMap {
        let mut map = BlobMap::new();
        for blob in &self.blobs {
            map.insert(blob.path.clone(), blob.bytes.clone());
        }
        map
    }
}

/// Why [`GeneratedKernel::param_buffers`] could not assemble the buffers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// No data was given for an activation or weight the kernel reads.
    #[error("no data given for `{0}`")]
    Missing(String),
    /// The data has the wrong length.
    #[error("`{name}` needs {expected} values, got {got}")]
    Length {
        /// The activation or weight.
        name: String,
        /// Elements it needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
}

/// Builds the packed input buffer: `sections[k]` is the data of `layout.sections[k]` in its
/// natural layout (see [`SectionContent`]); the result has `layout.numel()` elements.
///
/// # Panics
/// If the number of sections or a section's length is wrong (sizes are fixed by the program).
pub fn pack_input(layout: &PackLayout, sections: &[&[f32]]) -> Vec<f32> {
    assert_eq!(
        sections.len(),
        layout.sections.len(),
        "pack_input invariant: one slice per section ({:?})",
        layout
            .sections
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
    );
    let mut buf = vec![0.0f32; layout.numel()];
    for (index, data) in sections.iter().enumerate() {
        write_section(layout, index, data, &mut buf);
    }
    buf
}

/// Writes one section into an existing packed buffer (to restage weights without touching
/// activations, or the reverse).
///
/// # Panics
/// If `index` is out of range or a length is wrong.
pub fn write_section(layout: &PackLayout, index: usize, data: &[f32], buf: &mut [f32]) {
    let section = &layout.sections[index];
    assert_eq!(
        buf.len(),
        layout.numel(),
        "write_section invariant: packed buffer length"
    );
    assert_eq!(
        data.len(),
        section.numel(),
        "write_section invariant: section `{}` takes {} elements",
        section.name,
        section.numel()
    );
    let (rows, cols) = (section.rows, section.cols);
    let dst = |r: usize, c: usize| match layout.axis {
        PackAxis::Spatial => r * layout.width + section.offset + c,
        PackAxis::Channel => (section.offset + r) * layout.width + c,
    };
    match section.content {
        SectionContent::Activation | SectionContent::Weight(Orientation::Natural) => {
            // Row r of the section is contiguous in both layouts.
            for r in 0..rows {
                let at = dst(r, 0);
                buf[at..at + cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
            }
        }
        SectionContent::Weight(Orientation::Transposed) => {
            // The model matrix is [cols][rows]; the section holds its transpose. Blocked, so
            // both sides stream through cache lines rather than striding a whole matrix.
            const B: usize = 32;
            for r0 in (0..rows).step_by(B) {
                for c0 in (0..cols).step_by(B) {
                    for r in r0..(r0 + B).min(rows) {
                        let at = dst(r, 0);
                        for c in c0..(c0 + B).min(cols) {
                            buf[at + c] = data[c * rows + r];
                        }
                    }
                }
            }
        }
        SectionContent::Vector => {
            for (r, &value) in data.iter().enumerate() {
                buf[dst(r, 0)] = value;
            }
        }
    }
}

/// Reads one section back out of a packed buffer, in the natural layout [`pack_input`] takes.
pub fn read_section(layout: &PackLayout, index: usize, buf: &[f32]) -> Vec<f32> {
    let section = &layout.sections[index];
    let (rows, cols) = (section.rows, section.cols);
    let src = |r: usize, c: usize| match layout.axis {
        PackAxis::Spatial => buf[r * layout.width + section.offset + c],
        PackAxis::Channel => buf[(section.offset + r) * layout.width + c],
    };
    match section.content {
        SectionContent::Activation | SectionContent::Weight(Orientation::Natural) => (0..rows
            * cols)
            .map(|idx| src(idx / cols, idx % cols))
            .collect(),
        SectionContent::Weight(Orientation::Transposed) => (0..rows * cols)
            .map(|idx| src(idx % rows, idx / rows))
            .collect(),
        SectionContent::Vector => (0..rows).map(|r| src(r, 0)).collect(),
    }
}

/// Copies every tap out of the kernel's output buffers (`outputs[k]` is output `k`), in the
/// order of `taps`; each result is channel-first `[channels][seq]`.
pub fn unpack_taps(taps: &[TapSpec], outputs: &[&[f32]]) -> Vec<Vec<f32>> {
    taps.iter()
        .map(|tap| read_tap(tap, outputs).to_vec())
        .collect()
}

/// The slice of the output buffers holding `tap`.
///
/// # Panics
/// If an output is missing or too short for the tap (sizes are fixed by the program).
pub fn read_tap<'a>(tap: &TapSpec, outputs: &[&'a [f32]]) -> &'a [f32] {
    let output = outputs[tap.output];
    &output[tap.range()]
}

/// Repeats each key/value head for the query heads that share it (grouped-query attention):
/// `x` is `[n_kv_heads * head_dim][seq]`; query head `h` reads key/value head
/// `h / (n_heads / n_kv_heads)`. The result is `[n_heads * head_dim][seq]`.
pub fn gqa_tile_kv(
    x: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    seq: usize,
) -> Vec<f32> {
    let ratio = n_heads / n_kv_heads;
    let block = head_dim * seq;
    let mut out = Vec::with_capacity(n_heads * block);
    for head in 0..n_heads {
        let kv = head / ratio;
        out.extend_from_slice(&x[kv * block..(kv + 1) * block]);
    }
    out
}

/// The adjoint of [`gqa_tile_kv`]: sums the gradients of the query heads sharing each key/value
/// head. `dx` is `[n_heads * head_dim][seq]`; the result `[n_kv_heads * head_dim][seq]`.
pub fn gqa_reduce_kv(
    dx: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    seq: usize,
) -> Vec<f32> {
    let ratio = n_heads / n_kv_heads;
    let block = head_dim * seq;
    let mut out = vec![0.0f32; n_kv_heads * block];
    for head in 0..n_heads {
        let kv = head / ratio;
        for (dst, src) in out[kv * block..(kv + 1) * block]
            .iter_mut()
            .zip(&dx[head * block..(head + 1) * block])
        {
            *dst += *src;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> PackLayout {
        // [1, 3, 1, 2 + 2 + 2 + 1]: act [3][2], W^T of a [2][3] matrix, W natural [3][2], vector [2].
        PackLayout {
            param: 0,
            axis: PackAxis::Spatial,
            channels: 3,
            width: 7,
            sections: vec![
                PackSection {
                    name: "x".into(),
                    offset: 0,
                    rows: 3,
                    cols: 2,
                    content: SectionContent::Activation,
                },
                PackSection {
                    name: "wq".into(),
                    offset: 2,
                    rows: 3,
                    cols: 2,
                    content: SectionContent::Weight(Orientation::Transposed),
                },
                PackSection {
                    name: "wo".into(),
                    offset: 4,
                    rows: 3,
                    cols: 2,
                    content: SectionContent::Weight(Orientation::Natural),
                },
                PackSection {
                    name: "g".into(),
                    offset: 6,
                    rows: 2,
                    cols: 1,
                    content: SectionContent::Vector,
                },
            ],
        }
    }

    #[test]
    fn spatial_packing_matches_the_formula_and_round_trips() {
        let layout = layout();
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3][2]
        let wq = [10.0, 11.0, 12.0, 20.0, 21.0, 22.0]; // model [2][3] (out 2, in 3)
        let wo = [30.0, 31.0, 32.0, 33.0, 34.0, 35.0]; // [3][2]
        let g = [7.0, 8.0];
        let buf = pack_input(&layout, &[&x, &wq, &wo, &g]);
        #[rustfmt::skip]
        let expected = [
            1.0, 2.0, 10.0, 20.0, 30.0, 31.0, 7.0,
            3.0, 4.0, 11.0, 21.0, 32.0, 33.0, 8.0,
            5.0, 6.0, 12.0, 22.0, 34.0, 35.0, 0.0,
        ];
        assert_eq!(buf, expected);
        assert_eq!(read_section(&layout, 0, &buf), x);
        assert_eq!(read_section(&layout, 1, &buf), wq);
        assert_eq!(read_section(&layout, 2, &buf), wo);
        assert_eq!(read_section(&layout, 3, &buf), g);
        let mut restaged = buf.clone();
        write_section(&layout, 1, &[0.0; 6], &mut restaged);
        assert_eq!(restaged[2], 0.0);
        assert_eq!(restaged[0], 1.0);
        assert_eq!(layout.section("wo"), Some(2));
    }

    #[test]
    fn channel_packing_and_taps() {
        let layout = PackLayout {
            param: 0,
            axis: PackAxis::Channel,
            channels: 3,
            width: 2,
            sections: vec![
                PackSection {
                    name: "a".into(),
                    offset: 0,
                    rows: 1,
                    cols: 2,
                    content: SectionContent::Activation,
                },
                PackSection {
                    name: "b".into(),
                    offset: 1,
                    rows: 2,
                    cols: 2,
                    content: SectionContent::Activation,
                },
            ],
        };
        let buf = pack_input(&layout, &[&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0]]);
        assert_eq!(buf, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(read_section(&layout, 1, &buf), [3.0, 4.0, 5.0, 6.0]);
        let taps = vec![
            TapSpec {
                name: "a".into(),
                output: 0,
                channel_offset: 0,
                channels: 1,
                seq: 2,
            },
            TapSpec {
                name: "b".into(),
                output: 0,
                channel_offset: 1,
                channels: 2,
                seq: 2,
            },
            TapSpec {
                name: "c".into(),
                output: 1,
                channel_offset: 0,
                channels: 1,
                seq: 2,
            },
        ];
        let other = [9.0, 9.5];
        let got = unpack_taps(&taps, &[&buf, &other]);
        assert_eq!(
            got,
            vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0, 6.0], vec![9.0, 9.5]]
        );
    }

    #[test]
    fn gqa_tile_and_reduce_are_adjoint() {
        // 4 query heads, 2 kv heads, head_dim 1, seq 2.
        let kv = [1.0, 2.0, 3.0, 4.0];
        let tiled = gqa_tile_kv(&kv, 4, 2, 1, 2);
        assert_eq!(tiled, [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
        let grads = [1.0, 1.0, 10.0, 10.0, 100.0, 100.0, 1000.0, 1000.0];
        assert_eq!(
            gqa_reduce_kv(&grads, 4, 2, 1, 2),
            [11.0, 11.0, 1100.0, 1100.0]
        );
        // <tile(x), y> == <x, reduce(y)>
        let lhs: f32 = tiled.iter().zip(&grads).map(|(a, b)| a * b).sum();
        let rhs: f32 = kv
            .iter()
            .zip(gqa_reduce_kv(&grads, 4, 2, 1, 2))
            .map(|(a, b)| a * b)
            .sum();
        assert_eq!(lhs, rhs);
    }
}
