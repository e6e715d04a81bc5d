//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0): read into a typed byte buffer, write
//! version 1.0. Little-endian C-order arrays of the dtypes MIL programs exchange.

use anyhow::{Context, Result, bail};
use milbridge_mil::ir::{DType, TensorType};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from or written to a `.npy` file: its MIL type and dense little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Element type and shape.
    pub ty: TensorType,
    /// Dense row-major little-endian elements.
    pub bytes: Vec<u8>,
}

/// The numpy `descr` of a MIL dtype.
fn descr_of(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Fp16 => "<f2",
        DType::Fp32 => "<f4",
        DType::Fp64 => "<f8",
        DType::Int8 => "|i1",
        DType::Uint8 => "|u1",
        DType::Int16 => "<i2",
        DType::Uint16 => "<u2",
        DType::Int32 => "<i4",
        DType::Uint32 => "<u4",
        DType::Int64 => "<i8",
        DType::Uint64 => "<u8",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    let normalised = match descr {
        "f2" | "<f2" | "=f2" => "<f2",
        "f4" | "<f4" | "=f4" => "<f4",
        "f8" | "<f8" | "=f8" => "<f8",
        "i1" | "|i1" | "<i1" => "|i1",
        "u1" | "|u1" | "<u1" => "|u1",
        "b1" | "|b1" | "<b1" | "?" | "|?" => "|b1",
        "i2" | "<i2" => "<i2",
        "u2" | "<u2" => "<u2",
        "i4" | "<i4" => "<i4",
        "u4" | "<u4" => "<u4",
        "i8" | "<i8" => "<i8",
        "u8" | "<u8" => "<u8",
        _ => return None,
    };
    DType::ALL
        .iter()
        .copied()
        .find(|&dtype| descr_of(dtype) == Some(normalised))
}

/// Extracts the value text of `'key': value` from the header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parses the bytes of a `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not a .npy file (bad magic)");
    }
    let major = bytes[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        other => bail!("unsupported .npy format version {other}"),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len());
    let Some(header_end) = header_end else {
        bail!("truncated .npy header")
    };
    let header =
        std::str::from_utf8(&bytes[header_start..header_end]).context("header is not text")?;
    let descr = dict_value(header, "descr")
        .context("header has no 'descr'")?
        .trim_matches('\'');
    let dtype = dtype_of(descr).with_context(|| format!("unsupported dtype '{descr}'"))?;
    if dict_value(header, "fortran_order") != Some("False") {
        bail!("Fortran-order arrays are not supported (save with np.ascontiguousarray)");
    }
    let shape_text = dict_value(header, "shape").context("header has no 'shape'")?;
    let shape = shape_text
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<usize>()
                .with_context(|| format!("bad shape {shape_text}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let ty = TensorType::new(dtype, shape);
    let need = ty.byte_len().context("array too large")?;
    let data = &bytes[header_end..];
    if data.len() < need {
        bail!(
            "truncated data: {} bytes for {ty} which needs {need}",
            data.len()
        );
    }
    Ok(NpyArray {
        ty,
        bytes: data[..need].to_vec(),
    })
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Serialises an array as `.npy` version 1.0.
pub fn to_bytes(array: &NpyArray) -> Result<Vec<u8>> {
    let descr = descr_of(array.ty.dtype)
        .with_context(|| format!("dtype {} has no .npy equivalent", array.ty.dtype))?;
    let shape = match array.ty.shape.as_slice() {
        [] => "()".to_string(),
        [single] => format!("({single},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + array.bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(
        &u16::try_from(header.len())
            .context("header too long")?
            .to_le_bytes(),
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&array.bytes);
    Ok(out)
}

/// Writes a `.npy` file atomically (temporary file, then rename).
pub fn write(path: &Path, array: &NpyArray) -> Result<()> {
    let bytes = to_bytes(array)?;
    let tmp = path.with_extension("npy.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_dtype() {
        for dtype in [
            DType::Fp16,
            DType::Fp32,
            DType::Int32,
            DType::Int8,
            DType::Uint8,
            DType::Bool,
        ] {
            for shape in [vec![], vec![3], vec![2, 3, 1]] {
                let ty = TensorType::new(dtype, shape);
                let bytes: Vec<u8> = (0..ty.byte_len().unwrap())
                    .map(|idx| (idx % 2) as u8)
                    .collect();
                let array = NpyArray { ty, bytes };
                let encoded = to_bytes(&array).unwrap();
                assert_eq!(encoded.len() % 64, array.bytes.len() % 64);
                assert_eq!(parse(&encoded).unwrap(), array);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(b"nope").is_err());
        let array = NpyArray {
            ty: TensorType::new(DType::Fp32, [4]),
            bytes: vec![0; 16],
        };
        let encoded = to_bytes(&array).unwrap();
        assert!(
            parse(&encoded[..encoded.len() - 1])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let fortran = String::from_utf8_lossy(&encoded).replace("False", "True ");
        assert!(parse(fortran.as_bytes()).is_err());
    }

    #[test]
    fn reads_numpy_header_spellings() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        assert_eq!(dict_value(header, "shape"), Some("(2, 2)"));
        assert_eq!(dict_value(header, "descr"), Some("'<f4'"));
        assert_eq!(dict_value(header, "fortran_order"), Some("False"));
    }
}
