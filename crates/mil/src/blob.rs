//! Weight blob files (mil-spec section 7): decoding a BLOBFILE literal's bytes, and writers for
//! every layout Apple's tools and maderix/ANE produce.
//!
//! Reading ([`read_blob`]) takes the whole file, the BLOBFILE `offset` (which names the blob's
//! 64-byte metadata record, not its data) and the declared tensor type, and returns the tensor.
//! It never reads out of bounds and never panics, whatever the bytes and the offset: every
//! position is computed with checked arithmetic.
//!
//! * [`BlobMode::Strict`] is mil-spec 7.4 steps 1–7: a MILBlob v2 header (E151), metadata inside
//!   the file (E152), the `0xDEADBEEF` sentinel (E153), a dtype code matching the declared dtype
//!   (E154), a size equal to the declared byte count (E156), data after its own metadata record
//!   (E157) and inside the file (E158). Unaligned metadata or data offsets are accepted with a
//!   W159 warning.
//! * [`BlobMode::Lenient`] (the default) additionally applies the compat rules C1–C4 of 7.4, which
//!   accept the malformed files maderix/ANE writes (7.3.3, 7.3.4). Each relaxation produces a
//!   warning that names the rule it bent. Its code is the one strict mode would have reported
//!   (E151, E153, E154, E156, E157 or E158), and it must be shown at warning severity;
//!   [`BlobRead::warning_diagnostics`] does that.
//!
//! Writers are pure functions returning the file bytes: [`BlobWriter`] (Apple's layout, 7.2),
//! [`single_fp16_blob`] and [`single_fp16_blob_transposed`] (7.3.1, the bridge's
//! `ane_bridge_build_weight_blob*`), [`chunked_fp16_blob`] (7.3.2), [`malformed_bench_blob`]
//! (7.3.3), [`int8_bridge_blob`] (7.3.4) and [`quantize_symmetric_int8`].

use crate::diag::{DiagCode, Diagnostic, Severity};
use crate::ir::{DType, Tensor, TensorType};
use crate::span::Span;
use half::f16;
use std::fmt;

/// The MILBlob metadata sentinel, `0xDEADBEEF` (bytes `EF BE AD DE`).
pub const SENTINEL: u32 = 0xDEAD_BEEF;

/// Size of the file header and of each metadata record.
pub const RECORD_SIZE: u64 = 64;

/// How strictly [`read_blob`] checks a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BlobMode {
    /// mil-spec 7.4 steps 1–7: only well-formed MILBlob v2 files.
    Strict,
    /// Strict plus the compat rules C1–C4 for maderix/ANE's files; each relaxation is reported
    /// as a warning naming the rule.
    #[default]
    Lenient,
}

/// A successfully decoded blob.
#[derive(Clone, Debug, PartialEq)]
pub struct BlobRead {
    /// The tensor, with exactly the declared type.
    pub tensor: Tensor,
    /// Warnings: W159 (unaligned offsets) and, in lenient mode, one entry per compat rule
    /// applied (the code strict mode would have reported, the message naming the rule). All of
    /// them are warnings, whatever the code's default severity.
    pub warnings: Vec<(DiagCode, String)>,
}

impl BlobRead {
    /// The warnings as diagnostics at `span` (the BLOBFILE literal), with warning severity.
    pub fn warning_diagnostics(&self, span: Span) -> Vec<Diagnostic> {
        self.warnings
            .iter()
            .map(|(code, message)| {
                Diagnostic::new(*code, span, message.clone()).with_severity(Severity::Warning)
            })
            .collect()
    }
}

/// Why a blob could not be read: a code from E150–E158 and a message with concrete values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobError {
    /// The catalogue code (mil-spec 9.5).
    pub code: DiagCode,
    /// Lowercase, no trailing period, concrete values inline.
    pub message: String,
}

impl BlobError {
    fn new(code: DiagCode, message: impl Into<String>) -> BlobError {
        BlobError {
            code,
            message: message.into(),
        }
    }

    /// The error as a diagnostic at `span` (the BLOBFILE literal).
    pub fn to_diagnostic(&self, span: Span) -> Diagnostic {
        Diagnostic::new(self.code, span, self.message.clone())
    }
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for BlobError {}

fn read_u32(file: &[u8], at: u64) -> Option<u32> {
    let start = usize::try_from(at).ok()?;
    let bytes = file.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(file: &[u8], at: u64) -> Option<u64> {
    let start = usize::try_from(at).ok()?;
    let bytes = file.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn has_sentinel(file: &[u8], at: u64) -> bool {
    read_u32(file, at) == Some(SENTINEL)
}

/// Whether `start..start+len` lies inside a file of `file_len` bytes (no overflow).
fn in_file(start: u64, len: u64, file_len: usize) -> bool {
    start
        .checked_add(len)
        .is_some_and(|end| end <= file_len as u64)
}

fn dtype_of_code(code: u32) -> String {
    match DType::from_blob_code(code) {
        Some(dtype) => format!("{code} ({dtype})"),
        None if code == 16 => "16 (fp8 e4m3fn)".to_string(),
        None if code == 17 => "17 (fp8 e5m2)".to_string(),
        None => format!("{code} (unknown)"),
    }
}

/// Decodes the blob whose metadata record sits at `offset` in `file`, as a tensor of type `ty`
/// (mil-spec 7.4). Never panics and never reads out of bounds, for any bytes and any offset.
pub fn read_blob(
    file: &[u8],
    offset: u64,
    ty: &TensorType,
    mode: BlobMode,
) -> Result<BlobRead, BlobError> {
    let lenient = mode == BlobMode::Lenient;
    let mut warnings: Vec<(DiagCode, String)> = Vec::new();
    let file_len = file.len();

    // The byte count the declared type needs (sub-byte types packed).
    if ty.dtype == DType::String {
        return Err(BlobError::new(
            DiagCode::E150,
            format!("BLOBFILE cannot hold a tensor of dtype {}", ty.dtype),
        ));
    }
    let numel = ty.numel();
    let need = match ty.dtype.storage_bytes(numel) {
        Some(need) if numel != usize::MAX => need as u64,
        _ => {
            return Err(BlobError::new(
                DiagCode::E156,
                format!("declared type {ty} has too many elements to read from a blob"),
            ));
        }
    };

    // Step 1: the file header (C1: a headerless chunk starting with the sentinel).
    let headerless = lenient && has_sentinel(file, 0);
    if headerless {
        warnings.push((
            DiagCode::E151,
            "compat rule C1: file has no MILBlob header (starts with the blob sentinel); header check skipped"
                .to_string(),
        ));
        // C4: the offset names the data directly when no metadata record sits there.
        if offset == RECORD_SIZE && !has_sentinel(file, offset) {
            if !in_file(offset, need, file_len) {
                return Err(BlobError::new(
                    DiagCode::E158,
                    format!(
                        "data range {offset}..{} extends beyond the end of the file ({file_len} bytes)",
                        offset.saturating_add(need)
                    ),
                ));
            }
            warnings.push((
                DiagCode::E153,
                format!(
                    "compat rule C4: no blob metadata at offset {offset} of a headerless file; offset read as the data start"
                ),
            ));
            return finish(file, offset, need, ty, warnings);
        }
    } else {
        if file_len < RECORD_SIZE as usize {
            return Err(BlobError::new(
                DiagCode::E151,
                format!("not a MILBlob v2 file: {file_len} bytes, shorter than the 64-byte header"),
            ));
        }
        let version = read_u32(file, 4).unwrap_or(0);
        if version != 2 {
            return Err(BlobError::new(
                DiagCode::E151,
                format!("not a MILBlob v2 file: header version is {version}, expected 2"),
            ));
        }
    }

    // Step 2: the metadata record lies inside the file.
    if !in_file(offset, RECORD_SIZE, file_len) {
        return Err(BlobError::new(
            DiagCode::E152,
            format!(
                "blob metadata at offset {offset} extends beyond the end of the file ({file_len} bytes)"
            ),
        ));
    }

    // Step 3: the sentinel.
    let sentinel = read_u32(file, offset).unwrap_or(0);
    if sentinel != SENTINEL {
        let bytes = sentinel.to_le_bytes();
        return Err(BlobError::new(
            DiagCode::E153,
            format!(
                "no blob metadata at offset {offset}: found bytes {:02X} {:02X} {:02X} {:02X}, expected EF BE AD DE",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }

    // Step 4: the dtype code (C2: trust the declared type).
    let code = read_u32(file, offset + 4).unwrap_or(0);
    if ty.dtype.blob_code() != Some(code) {
        let declared = match ty.dtype.blob_code() {
            Some(expected) => format!("declared dtype {} (code {expected})", ty.dtype),
            None => format!("declared dtype {} (no blob code)", ty.dtype),
        };
        let message = format!(
            "blob at offset {offset} has dtype code {}, {declared}",
            dtype_of_code(code)
        );
        if !lenient {
            return Err(BlobError::new(DiagCode::E154, message));
        }
        warnings.push((
            DiagCode::E154,
            format!("compat rule C2: {message}; declared type trusted"),
        ));
    }

    // Step 5: size and data offset (C3: data right after the metadata, declared size).
    let size = read_u64(file, offset + 8).unwrap_or(0);
    let data = read_u64(file, offset + 16).unwrap_or(0);
    let data_start_min = offset + RECORD_SIZE; // in_file above guarantees no overflow
    let mut data_start = data;
    if lenient {
        let mut reasons = Vec::new();
        if data == 0 {
            reasons.push("data offset is 0".to_string());
        }
        if size != need {
            reasons.push(format!(
                "size field is {size} bytes, declared type needs {need}"
            ));
        }
        if data != 0 && !in_file(data, size, file_len) {
            reasons.push(format!(
                "data range {data}..{} lies beyond the end of the file ({file_len} bytes)",
                data.saturating_add(size)
            ));
        }
        if !reasons.is_empty() {
            if !in_file(data_start_min, need, file_len) {
                return Err(BlobError::new(
                    DiagCode::E158,
                    format!(
                        "data range {data_start_min}..{} extends beyond the end of the file ({file_len} bytes)",
                        data_start_min.saturating_add(need)
                    ),
                ));
            }
            let code = if size != need {
                DiagCode::E156
            } else if data == 0 {
                DiagCode::E157
            } else {
                DiagCode::E158
            };
            warnings.push((
                code,
                format!(
                    "compat rule C3: {}; data read at offset {data_start_min} with {need} bytes",
                    reasons.join(", ")
                ),
            ));
            data_start = data_start_min;
        }
    }
    if data_start == data {
        if size != need {
            return Err(BlobError::new(
                DiagCode::E156,
                format!(
                    "blob at offset {offset} holds {size} bytes, declared type {ty} needs {need}"
                ),
            ));
        }
        if data < data_start_min {
            return Err(BlobError::new(
                DiagCode::E157,
                format!(
                    "data offset {data} of the blob at offset {offset} lies inside or before its metadata record (data must start at {data_start_min} or later)"
                ),
            ));
        }
        if !in_file(data, size, file_len) {
            return Err(BlobError::new(
                DiagCode::E158,
                format!(
                    "data range {data}..{} extends beyond the end of the file ({file_len} bytes)",
                    data.saturating_add(size)
                ),
            ));
        }
    }

    // Step 6: alignment.
    if !offset.is_multiple_of(RECORD_SIZE) || !data_start.is_multiple_of(RECORD_SIZE) {
        warnings.push((
            DiagCode::W159,
            format!(
                "unaligned blob: metadata offset {offset}, data offset {data_start} (64-byte alignment expected)"
            ),
        ));
    }

    // Step 7: decode.
    finish(file, data_start, need, ty, warnings)
}

/// Decodes `need` bytes at `start` (already checked to lie inside `file`) as `ty`.
fn finish(
    file: &[u8],
    start: u64,
    need: u64,
    ty: &TensorType,
    warnings: Vec<(DiagCode, String)>,
) -> Result<BlobRead, BlobError> {
    let out_of_file = || {
        BlobError::new(
            DiagCode::E158,
            format!(
                "data range {start}..{} extends beyond the end of the file ({} bytes)",
                start.saturating_add(need),
                file.len()
            ),
        )
    };
    let begin = usize::try_from(start).map_err(|_| out_of_file())?;
    let end = usize::try_from(need)
        .ok()
        .and_then(|need| begin.checked_add(need))
        .ok_or_else(out_of_file)?;
    let bytes = file.get(begin..end).ok_or_else(out_of_file)?;
    let bytes: Vec<u8> = if ty.dtype == DType::Bool {
        bytes.iter().map(|&byte| u8::from(byte != 0)).collect()
    } else {
        bytes.to_vec()
    };
    let tensor = Tensor::from_bytes(ty.clone(), bytes).map_err(|err| {
        BlobError::new(
            DiagCode::E156,
            format!("cannot build a {ty} tensor from the blob: {err}"),
        )
    })?;
    Ok(BlobRead { tensor, warnings })
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn fp16_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values
        .flat_map(|value| f16::from_f32(value).to_le_bytes())
        .collect()
}

/// Writes MILBlob v2 files exactly as Apple's writer does (mil-spec 7.2): a 64-byte header whose
/// `count` is the number of blobs, then per blob a 64-byte metadata record at the next multiple
/// of 64 followed immediately by its data, with the blob's dtype code, byte size and absolute
/// data offset; reserved bytes are zero.
#[derive(Clone, Debug)]
pub struct BlobWriter {
    bytes: Vec<u8>,
    count: u32,
}

impl Default for BlobWriter {
    fn default() -> Self {
        BlobWriter::new()
    }
}

impl BlobWriter {
    /// A writer holding only the header (count 0, version 2).
    pub fn new() -> BlobWriter {
        let mut bytes = vec![0u8; RECORD_SIZE as usize];
        put_u32(&mut bytes, 4, 2);
        BlobWriter { bytes, count: 0 }
    }

    /// Appends one blob of raw little-endian `data` stored as `dtype` and returns the offset of
    /// its metadata record (the value for `BLOBFILE(offset = ...)`). A dtype without a MILBlob
    /// code (bool, string, 64-bit types) is written with code 0, which every reader rejects.
    pub fn add(&mut self, dtype: DType, data: &[u8]) -> u64 {
        let meta = self.bytes.len().next_multiple_of(RECORD_SIZE as usize);
        let data_offset = meta + RECORD_SIZE as usize;
        self.bytes.resize(data_offset, 0);
        put_u32(&mut self.bytes, meta, SENTINEL);
        put_u32(&mut self.bytes, meta + 4, dtype.blob_code().unwrap_or(0));
        put_u64(&mut self.bytes, meta + 8, data.len() as u64);
        put_u64(&mut self.bytes, meta + 16, data_offset as u64);
        self.bytes.extend_from_slice(data);
        self.count += 1;
        put_u32(&mut self.bytes, 0, self.count);
        meta as u64
    }

    /// Appends `values` converted to fp16 (round-to-nearest-even); returns the metadata offset.
    pub fn add_fp16(&mut self, values: &[f32]) -> u64 {
        let data = fp16_bytes(values.iter().copied());
        self.add(DType::Fp16, &data)
    }

    /// The file bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// mil-spec 7.3.1 (`ane_bridge_build_weight_blob`): a single fp16 blob, metadata at 64, data at
/// 128, values converted with round-to-nearest-even. Total length `128 + 2 * values.len()`; the
/// BLOBFILE offset is 64.
pub fn single_fp16_blob(values: &[f32]) -> Vec<u8> {
    let mut writer = BlobWriter::new();
    writer.add_fp16(values);
    writer.finish()
}

/// mil-spec 7.3.1 (`ane_bridge_build_weight_blob_transposed`): `values` is a row-major
/// `[rows][cols]` matrix; the blob stores its transpose, element `[j][i]` at `j * rows + i`.
///
/// # Panics
/// If `values.len() != rows * cols` (a caller bug: the C ABI builds the slice from `rows * cols`).
pub fn single_fp16_blob_transposed(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(
        Some(values.len()),
        rows.checked_mul(cols),
        "single_fp16_blob_transposed invariant: values.len() must equal rows * cols"
    );
    let transposed: Vec<f32> = (0..cols)
        .flat_map(|j| (0..rows).map(move |i| values[i * cols + j]))
        .collect();
    single_fp16_blob(&transposed)
}

/// mil-spec 7.3.2 (`training/ane_mil_gen.h`): a header with `count = 1`, version 2, then one
/// chunk per input back to back from offset 64: a 64-byte record (sentinel, dtype fp16, size,
/// absolute data offset) followed by the fp16 data. Returns the file and each chunk's metadata
/// offset (`64`, `64 + cs`, ...).
pub fn chunked_fp16_blob(chunks: &[&[f32]]) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = vec![0u8; RECORD_SIZE as usize];
    bytes[0] = 1;
    bytes[4] = 2;
    let mut offsets = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let meta = bytes.len();
        let data = fp16_bytes(chunk.iter().copied());
        bytes.resize(meta + RECORD_SIZE as usize, 0);
        put_u32(&mut bytes, meta, SENTINEL);
        bytes[meta + 4] = 1;
        put_u32(&mut bytes, meta + 8, data.len() as u32);
        put_u32(&mut bytes, meta + 16, (meta + RECORD_SIZE as usize) as u32);
        bytes.extend_from_slice(&data);
        offsets.push(meta as u64);
    }
    (bytes, offsets)
}

/// mil-spec 7.3.3 (the benchmark files `inmem_peak.m`, `sram_*.m`, `ane_int8_bench.m`): the
/// chunk arrangement of 7.3.2, but each record holds only the sentinel, `0x01` at +4 (fp16, even
/// for int8 data) and `marker` at +10 (`0x08` or `0x10`), and no data offset. The raw chunk bytes
/// follow each record. Returns the file and each chunk's metadata offset.
pub fn malformed_bench_blob(chunks: &[&[u8]], marker: u8) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = vec![0u8; RECORD_SIZE as usize];
    bytes[0] = 1;
    bytes[4] = 2;
    let mut offsets = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let meta = bytes.len();
        bytes.resize(meta + RECORD_SIZE as usize, 0);
        put_u32(&mut bytes, meta, SENTINEL);
        bytes[meta + 4] = 1;
        bytes[meta + 10] = marker;
        bytes.extend_from_slice(chunk);
        offsets.push(meta as u64);
    }
    (bytes, offsets)
}

/// mil-spec 7.3.4 (`ane_bridge_build_weight_blob_int8`): no file header; a record with the
/// sentinel, `0x01` at 4 and `0x08` at 10, then the int8 data from byte 64. Total length
/// `64 + values.len()`. Readable in lenient mode at offset 0 (rules C1–C3) or 64 (C1, C4).
pub fn int8_bridge_blob(values: &[i8]) -> Vec<u8> {
    let mut bytes = vec![0u8; RECORD_SIZE as usize];
    put_u32(&mut bytes, 0, SENTINEL);
    bytes[4] = 1;
    bytes[10] = 8;
    bytes.extend(values.iter().map(|&value| value.to_le_bytes()[0]));
    bytes
}

/// `ane_bridge_build_weight_blob_quantized`'s arithmetic: one global symmetric scale
/// `max|w| / 127` (1.0 when every value is zero), each value divided by it in f32, clamped to
/// `[-128, 127]`, then rounded half away from zero. Returns the quantized values and the scale.
pub fn quantize_symmetric_int8(values: &[f32]) -> (Vec<i8>, f32) {
    let max_abs = values
        .iter()
        .fold(0.0f32, |acc, &value| acc.max(value.abs()));
    let mut scale = max_abs / 127.0;
    if scale == 0.0 {
        scale = 1.0;
    }
    let quantized = values
        .iter()
        .map(|&value| {
            let scaled = (value / scale).clamp(-128.0, 127.0);
            let rounded = if scaled >= 0.0 {
                scaled + 0.5
            } else {
                scaled - 0.5
            };
            // `as` truncates toward zero and saturates (NaN becomes 0), like the C conversion
            // on every value the clamp lets through.
            rounded as i8
        })
        .collect();
    (quantized, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp16_ty(shape: &[usize]) -> TensorType {
        TensorType::new(DType::Fp16, shape.to_vec())
    }

    fn values_of(read: &BlobRead) -> Vec<f64> {
        read.tensor.to_f64_vec().unwrap()
    }

    fn codes(read: &BlobRead) -> Vec<DiagCode> {
        read.warnings.iter().map(|(code, _)| *code).collect()
    }

    fn err_code(result: Result<BlobRead, BlobError>) -> DiagCode {
        match result {
            Ok(read) => panic!("expected an error, got {:?}", read.warnings),
            Err(err) => err.code,
        }
    }

    #[test]
    fn single_fp16_blob_has_the_bridge_layout() {
        let values = [1.0f32, -2.0, 0.5, 65504.0, 1e-8, 0.1];
        let file = single_fp16_blob(&values);
        assert_eq!(file.len(), 128 + 12);
        assert_eq!(file[0], 1);
        assert_eq!(file[4], 2);
        assert_eq!(&file[64..68], &[0xEF, 0xBE, 0xAD, 0xDE]);
        assert_eq!(file[68], 1);
        assert_eq!(u32::from_le_bytes(file[72..76].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(file[80..84].try_into().unwrap()), 128);
        // Every other header byte is zero, as the bridge's calloc leaves it.
        for (idx, &byte) in file[..128].iter().enumerate() {
            if ![0, 4, 64, 65, 66, 67, 68, 72, 80].contains(&idx) {
                assert_eq!(byte, 0, "byte {idx}");
            }
        }
        // 0.1 rounds to the nearest fp16 (RNE): 0x2E66.
        assert_eq!(&file[138..140], &0x2E66u16.to_le_bytes());
        for mode in [BlobMode::Strict, BlobMode::Lenient] {
            let read = read_blob(&file, 64, &fp16_ty(&[2, 3]), mode).unwrap();
            assert!(read.warnings.is_empty());
            let got = values_of(&read);
            assert_eq!(got[..4], [1.0, -2.0, 0.5, 65504.0]);
            assert_eq!(got[4], 0.0); // 1e-8 is below half the smallest fp16 subnormal
            assert_eq!(got[5], f16::from_f32(0.1).to_f64());
        }
    }

    #[test]
    fn transposed_blob_stores_the_transpose() {
        // [[1, 2, 3], [4, 5, 6]] (2x3) -> [[1, 4], [2, 5], [3, 6]] (3x2)
        let file = single_fp16_blob_transposed(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let read = read_blob(&file, 64, &fp16_ty(&[3, 2]), BlobMode::Strict).unwrap();
        assert_eq!(values_of(&read), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn blob_writer_is_apple_layout_with_alignment_and_count() {
        let mut writer = BlobWriter::new();
        let a = writer.add(DType::Fp16, &[0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38]); // 1, -2, 0.5
        let b = writer.add(DType::Int8, &[1, 0xFF, 3]);
        let c = writer.add(DType::Fp32, &2.5f32.to_le_bytes());
        let file = writer.finish();
        assert_eq!((a, b, c), (64, 192, 320));
        assert_eq!(u32::from_le_bytes(file[0..4].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(file[4..8].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(file[196..200].try_into().unwrap()), 4);
        assert_eq!(u64::from_le_bytes(file[200..208].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(file[208..216].try_into().unwrap()), 256);
        assert_eq!(file.len(), 384 + 4);
        for mode in [BlobMode::Strict, BlobMode::Lenient] {
            let read = read_blob(&file, a, &fp16_ty(&[3]), mode).unwrap();
            assert_eq!(values_of(&read), vec![1.0, -2.0, 0.5]);
            assert!(read.warnings.is_empty());
            let ty = TensorType::new(DType::Int8, [3]);
            let read = read_blob(&file, b, &ty, mode).unwrap();
            assert_eq!(values_of(&read), vec![1.0, -1.0, 3.0]);
            let read = read_blob(&file, c, &TensorType::scalar(DType::Fp32), mode).unwrap();
            assert_eq!(values_of(&read), vec![2.5]);
        }
    }

    #[test]
    fn sub_byte_dtypes_use_storage_bytes() {
        let mut writer = BlobWriter::new();
        let offset = writer.add(DType::Uint4, &[0x21, 0x43, 0x05]); // 1 2 3 4 5 (5 nibbles)
        let file = writer.finish();
        let ty = TensorType::new(DType::Uint4, [5]);
        let read = read_blob(&file, offset, &ty, BlobMode::Strict).unwrap();
        assert_eq!(read.tensor.bytes().unwrap(), &[0x21, 0x43, 0x05]);
        let ty = TensorType::new(DType::Uint4, [7]); // needs 4 bytes
        assert_eq!(
            err_code(read_blob(&file, offset, &ty, BlobMode::Strict)),
            DiagCode::E156
        );
    }

    #[test]
    fn chunked_fp16_blob_reads_in_both_modes_with_unaligned_warning() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [4.0f32, 5.0, 6.0, 7.0];
        let (file, offsets) = chunked_fp16_blob(&[&a, &b]);
        assert_eq!(offsets, vec![64, 64 + 64 + 6]);
        assert_eq!(file.len(), 64 + (64 + 6) + (64 + 8));
        assert_eq!(file[0], 1); // count stays 1, as maderix writes it
        let first = read_blob(&file, 64, &fp16_ty(&[3]), BlobMode::Strict).unwrap();
        assert_eq!(values_of(&first), vec![1.0, 2.0, 3.0]);
        assert!(first.warnings.is_empty());
        for mode in [BlobMode::Strict, BlobMode::Lenient] {
            let second = read_blob(&file, offsets[1], &fp16_ty(&[4]), mode).unwrap();
            assert_eq!(values_of(&second), vec![4.0, 5.0, 6.0, 7.0]);
            assert_eq!(codes(&second), vec![DiagCode::W159]);
            assert!(second.warnings[0].1.contains("metadata offset 134"));
        }
    }

    #[test]
    fn malformed_bench_blob_is_strict_error_and_lenient_read() {
        let int8_chunk: Vec<u8> = (0..16u8).map(|v| v.wrapping_mul(17)).collect();
        let (file, offsets) = malformed_bench_blob(&[&int8_chunk, &int8_chunk], 0x08);
        assert_eq!(offsets, vec![64, 64 + 64 + 16]);
        let ty = TensorType::new(DType::Int8, [4, 4]);
        // Strict: dtype code fp16 for int8 data.
        assert_eq!(
            err_code(read_blob(&file, 64, &ty, BlobMode::Strict)),
            DiagCode::E154
        );
        // Strict with the "right" dtype still fails on the bogus size.
        let fp16 = fp16_ty(&[8]);
        assert_eq!(
            err_code(read_blob(&file, 64, &fp16, BlobMode::Strict)),
            DiagCode::E156
        );
        let read = read_blob(&file, offsets[1], &ty, BlobMode::Lenient).unwrap();
        let expected: Vec<f64> = int8_chunk.iter().map(|&b| f64::from(b as i8)).collect();
        assert_eq!(values_of(&read), expected);
        // The second chunk sits at 144: unaligned as well.
        assert_eq!(
            codes(&read),
            vec![DiagCode::E154, DiagCode::E156, DiagCode::W159]
        );
        assert!(read.warnings[0].1.starts_with("compat rule C2"));
        assert!(read.warnings[1].1.starts_with("compat rule C3"));
        assert!(read.warnings[1].1.contains("size field is 524288 bytes"));
        // The fp16 marker 0x10 file: size field 1048576.
        let fp16_chunk = fp16_bytes([1.0f32, -1.0].into_iter());
        let (file, _) = malformed_bench_blob(&[&fp16_chunk], 0x10);
        let read = read_blob(&file, 64, &fp16_ty(&[2]), BlobMode::Lenient).unwrap();
        assert_eq!(values_of(&read), vec![1.0, -1.0]);
        assert_eq!(codes(&read), vec![DiagCode::E156]);
        assert!(read.warnings[0].1.contains("1048576"));
    }

    #[test]
    fn int8_bridge_blob_reads_leniently_at_0_and_64() {
        let values: Vec<i8> = vec![-128, -1, 0, 1, 127, 5];
        let file = int8_bridge_blob(&values);
        assert_eq!(file.len(), 64 + 6);
        assert_eq!(&file[0..4], &[0xEF, 0xBE, 0xAD, 0xDE]);
        assert_eq!((file[4], file[10]), (1, 8));
        let ty = TensorType::new(DType::Int8, [2, 3]);
        let expected: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        // Strict: no MILBlob header (bytes 4..8 read as version 1).
        assert_eq!(
            err_code(read_blob(&file, 0, &ty, BlobMode::Strict)),
            DiagCode::E151
        );
        assert_eq!(
            err_code(read_blob(&file, 64, &ty, BlobMode::Strict)),
            DiagCode::E151
        );
        let at0 = read_blob(&file, 0, &ty, BlobMode::Lenient).unwrap();
        assert_eq!(values_of(&at0), expected);
        assert_eq!(
            codes(&at0),
            vec![DiagCode::E151, DiagCode::E154, DiagCode::E156]
        );
        assert!(at0.warnings[0].1.starts_with("compat rule C1"));
        let at64 = read_blob(&file, 64, &ty, BlobMode::Lenient).unwrap();
        assert_eq!(values_of(&at64), expected);
        assert_eq!(codes(&at64), vec![DiagCode::E151, DiagCode::E153]);
        assert!(at64.warnings[1].1.starts_with("compat rule C4"));
        // Too many elements for the file: E158 even leniently.
        let big = TensorType::new(DType::Int8, [100]);
        assert_eq!(
            err_code(read_blob(&file, 64, &big, BlobMode::Lenient)),
            DiagCode::E158
        );
        assert_eq!(
            err_code(read_blob(&file, 0, &big, BlobMode::Lenient)),
            DiagCode::E158
        );
    }

    #[test]
    fn quantize_matches_the_bridge() {
        let (q, scale) = quantize_symmetric_int8(&[0.0, 127.0, -127.0, 0.5, -0.5, 63.5, 2.5, 0.49]);
        assert_eq!(scale, 1.0);
        // Ties round half away from zero (2.5 -> 3, not the even 2).
        assert_eq!(q, vec![0, 127, -127, 1, -1, 64, 3, 0]);
        let (q, scale) = quantize_symmetric_int8(&[0.0, 0.0]);
        assert_eq!((q, scale), (vec![0, 0], 1.0));
        let (q, _) = quantize_symmetric_int8(&[]);
        assert!(q.is_empty());
        let (q, scale) = quantize_symmetric_int8(&[-3.0, 1.5]);
        assert_eq!(scale, 3.0 / 127.0);
        assert_eq!(q, vec![-127, 64]);
    }

    #[test]
    fn dtype_mismatch_strict_and_lenient() {
        let file = single_fp16_blob(&[1.0, 2.0]);
        let ty = TensorType::new(DType::Int16, [2]);
        let err = read_blob(&file, 64, &ty, BlobMode::Strict).unwrap_err();
        assert_eq!(err.code, DiagCode::E154);
        assert_eq!(
            err.message,
            "blob at offset 64 has dtype code 1 (fp16), declared dtype int16 (code 6)"
        );
        let read = read_blob(&file, 64, &ty, BlobMode::Lenient).unwrap();
        assert_eq!(codes(&read), vec![DiagCode::E154]);
        assert_eq!(
            values_of(&read),
            vec![f64::from(0x3C00u16 as i16), f64::from(0x4000i16)]
        );
        let diags = read.warning_diagnostics(Span::new(3, 9));
        assert_eq!(diags[0].severity, Severity::Warning);
        assert_eq!(diags[0].primary.span, Span::new(3, 9));
        let ty = TensorType::new(DType::String, [2]);
        assert_eq!(
            err_code(read_blob(&file, 64, &ty, BlobMode::Lenient)),
            DiagCode::E150
        );
    }

    #[test]
    fn strict_errors_each_code() {
        let good = single_fp16_blob(&[1.0, 2.0, 3.0, 4.0]);
        let ty = fp16_ty(&[4]);
        let strict = BlobMode::Strict;
        // E151: wrong version, and too short.
        let mut bad = good.clone();
        bad[4] = 1;
        let err = read_blob(&bad, 64, &ty, strict).unwrap_err();
        assert_eq!(err.code, DiagCode::E151);
        assert_eq!(
            err.message,
            "not a MILBlob v2 file: header version is 1, expected 2"
        );
        assert_eq!(
            err_code(read_blob(&good[..10], 64, &ty, strict)),
            DiagCode::E151
        );
        // E152: metadata beyond the end.
        let err = read_blob(&good, 100, &ty, strict).unwrap_err();
        assert_eq!(err.code, DiagCode::E152);
        assert_eq!(
            err.message,
            "blob metadata at offset 100 extends beyond the end of the file (136 bytes)"
        );
        // E153: no sentinel, message shows the bytes.
        let err = read_blob(&good, 0, &ty, strict).unwrap_err();
        assert_eq!(err.code, DiagCode::E153);
        assert!(
            err.message.contains("found bytes 01 00 00 00"),
            "{}",
            err.message
        );
        // E156: size mismatch.
        assert_eq!(
            err_code(read_blob(&good, 64, &fp16_ty(&[3]), strict)),
            DiagCode::E156
        );
        // E157: data offset inside its own record.
        let mut bad = good.clone();
        put_u64(&mut bad, 80, 100);
        assert_eq!(err_code(read_blob(&bad, 64, &ty, strict)), DiagCode::E157);
        // E158: data beyond the end.
        let mut bad = good.clone();
        put_u64(&mut bad, 80, 130);
        assert_eq!(err_code(read_blob(&bad, 64, &ty, strict)), DiagCode::E158);
        // The lenient reader repairs the last two (C3) but keeps E152/E153.
        let mut bad = good.clone();
        put_u64(&mut bad, 80, 130);
        let read = read_blob(&bad, 64, &ty, BlobMode::Lenient).unwrap();
        assert_eq!(values_of(&read), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(codes(&read), vec![DiagCode::E158]);
        assert_eq!(
            err_code(read_blob(&good, 0, &ty, BlobMode::Lenient)),
            DiagCode::E153
        );
        assert_eq!(
            err_code(read_blob(&good, 100, &ty, BlobMode::Lenient)),
            DiagCode::E152
        );
    }

    #[test]
    fn unaligned_data_offset_warns_w159() {
        // Metadata at 64 but data at 132: a valid, unaligned layout.
        let mut file = single_fp16_blob(&[7.0, 8.0]);
        let data = file.split_off(128);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend_from_slice(&data);
        put_u64(&mut file, 80, 132);
        let read = read_blob(&file, 64, &fp16_ty(&[2]), BlobMode::Strict).unwrap();
        assert_eq!(values_of(&read), vec![7.0, 8.0]);
        assert_eq!(codes(&read), vec![DiagCode::W159]);
        assert!(read.warnings[0].1.contains("data offset 132"));
    }

    #[test]
    fn huge_offsets_and_sizes_never_overflow() {
        let good = single_fp16_blob(&[1.0, 2.0]);
        let ty = fp16_ty(&[2]);
        for mode in [BlobMode::Strict, BlobMode::Lenient] {
            for offset in [
                u64::MAX,
                u64::MAX - 3,
                u64::MAX - 63,
                u64::MAX - 64,
                1 << 63,
            ] {
                assert_eq!(
                    err_code(read_blob(&good, offset, &ty, mode)),
                    DiagCode::E152
                );
            }
            let mut bad = good.clone();
            put_u64(&mut bad, 80, u64::MAX - 1);
            let result = read_blob(&bad, 64, &ty, mode);
            if mode == BlobMode::Strict {
                assert_eq!(err_code(result), DiagCode::E158);
            } else {
                assert_eq!(codes(&result.unwrap()), vec![DiagCode::E158]);
            }
            let mut bad = good.clone();
            put_u64(&mut bad, 72, u64::MAX);
            put_u64(&mut bad, 80, u64::MAX);
            let result = read_blob(&bad, 64, &ty, mode);
            if mode == BlobMode::Strict {
                assert_eq!(err_code(result), DiagCode::E156);
            } else {
                assert_eq!(values_of(&result.unwrap()), vec![1.0, 2.0]);
            }
            // A declared type whose byte count overflows.
            let huge = TensorType::new(DType::Fp16, [usize::MAX, 4]);
            assert_eq!(err_code(read_blob(&good, 64, &huge, mode)), DiagCode::E156);
            let huge = TensorType::new(DType::Fp16, [usize::MAX / 2]);
            assert!(read_blob(&good, 64, &huge, mode).is_err());
        }
        // A headerless file with an enormous declared tensor at C4's offset.
        let file = int8_bridge_blob(&[1, 2]);
        let huge = TensorType::new(DType::Int8, [usize::MAX / 2]);
        assert!(read_blob(&file, 64, &huge, BlobMode::Lenient).is_err());
    }

    #[test]
    fn truncation_at_every_byte_never_panics() {
        let mut writer = BlobWriter::new();
        writer.add_fp16(&[1.0, 2.0, 3.0]);
        let offset = writer.add(DType::Int8, &[1, 2, 3, 4, 5]);
        let files = [
            writer.finish(),
            single_fp16_blob(&[1.0, 2.0, 3.0]),
            chunked_fp16_blob(&[&[1.0, 2.0], &[3.0]]).0,
            malformed_bench_blob(&[&[1, 2, 3, 4]], 8).0,
            int8_bridge_blob(&[1, 2, 3, 4, 5]),
        ];
        let types = [
            fp16_ty(&[3]),
            fp16_ty(&[2]),
            TensorType::new(DType::Int8, [5]),
            TensorType::new(DType::Int8, [4]),
            TensorType::new(DType::Uint4, [3]),
        ];
        for file in &files {
            for len in 0..=file.len() {
                let cut = &file[..len];
                for ty in &types {
                    for off in [0u64, 1, 63, 64, 65, 128, offset, 134, u64::MAX] {
                        for mode in [BlobMode::Strict, BlobMode::Lenient] {
                            if let Ok(read) = read_blob(cut, off, ty, mode) {
                                assert_eq!(&read.tensor.ty, ty);
                                assert_eq!(
                                    read.tensor.bytes().unwrap().len(),
                                    ty.byte_len().unwrap()
                                );
                            }
                        }
                    }
                }
            }
        }
        let full = read_blob(&files[0], offset, &types[2], BlobMode::Strict).unwrap();
        assert_eq!(values_of(&full), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        // Cutting one byte off the end is E158 for the last blob.
        let cut = &files[0][..files[0].len() - 1];
        assert_eq!(
            err_code(read_blob(cut, offset, &types[2], BlobMode::Strict)),
            DiagCode::E158
        );
        assert_eq!(
            err_code(read_blob(cut, offset, &types[2], BlobMode::Lenient)),
            DiagCode::E158
        );
    }

    #[test]
    fn bool_blobs_are_normalised() {
        let mut writer = BlobWriter::new();
        let offset = writer.add(DType::Uint8, &[0, 1, 7]);
        let file = writer.finish();
        let ty = TensorType::new(DType::Bool, [3]);
        assert_eq!(
            err_code(read_blob(&file, offset, &ty, BlobMode::Strict)),
            DiagCode::E154
        );
        let read = read_blob(&file, offset, &ty, BlobMode::Lenient).unwrap();
        assert_eq!(read.tensor.bytes().unwrap(), &[0, 1, 1]);
    }
}
