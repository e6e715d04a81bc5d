//! Constant tables the attention kernels read through BLOBFILE, as maderix/ANE builds them: the
//! additive causal mask and the RoPE cos/sin tables.

use milbridge_mil::blob::single_fp16_blob;

/// BLOBFILE path of the causal mask `[1, 1, seq, seq]`.
pub const MASK_PATH: &str = "@model_path/weights/mask.bin";
/// BLOBFILE path of the RoPE cosine table `[1, 1, seq, head_dim]`.
pub const ROPE_COS_PATH: &str = "@model_path/weights/rope_cos.bin";
/// BLOBFILE path of the RoPE sine table `[1, 1, seq, head_dim]`.
pub const ROPE_SIN_PATH: &str = "@model_path/weights/rope_sin.bin";

/// The mask value for "may not attend": the most negative finite fp16.
pub const MASK_NEG: f32 = -65504.0;

/// The additive causal mask, `[seq][seq]` row-major: 0 where key `j <= ` query `i`, -65504 above
/// the diagonal.
pub fn causal_mask(seq: usize) -> Vec<f32> {
    (0..seq * seq)
        .map(|idx| {
            if idx % seq <= idx / seq {
                0.0
            } else {
                MASK_NEG
            }
        })
        .collect()
}

/// The RoPE angle of position `pos` and pair `pair`: `pos * theta^(-2 pair / head_dim)`.
pub fn rope_angle(pos: usize, pair: usize, head_dim: usize, theta: f64) -> f64 {
    pos as f64 * theta.powf(-2.0 * pair as f64 / head_dim as f64)
}

/// The RoPE tables `(cos, sin)`, each `[seq][head_dim]` row-major, for adjacent-pair rotation:
/// entries `2i` and `2i + 1` of row `p` both hold `cos` (`sin`) of [`rope_angle`]`(p, i)`.
pub fn rope_tables(seq: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let mut cos = vec![0.0f32; seq * head_dim];
    let mut sin = vec![0.0f32; seq * head_dim];
    for pos in 0..seq {
        for pair in 0..head_dim / 2 {
            let angle = rope_angle(pos, pair, head_dim, theta);
            for lane in 0..2 {
                cos[pos * head_dim + 2 * pair + lane] = angle.cos() as f32;
                sin[pos * head_dim + 2 * pair + lane] = angle.sin() as f32;
            }
        }
    }
    (cos, sin)
}

/// The causal mask as a single-fp16-blob file.
pub fn mask_blob(seq: usize) -> Vec<u8> {
    single_fp16_blob(&causal_mask(seq))
}

/// The RoPE tables as single-fp16-blob files `(cos, sin)`.
pub fn rope_blobs(seq: usize, head_dim: usize, theta: f64) -> (Vec<u8>, Vec<u8>) {
    let (cos, sin) = rope_tables(seq, head_dim, theta);
    (single_fp16_blob(&cos), single_fp16_blob(&sin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal() {
        let mask = causal_mask(3);
        assert_eq!(
            mask,
            [0.0, MASK_NEG, MASK_NEG, 0.0, 0.0, MASK_NEG, 0.0, 0.0, 0.0]
        );
        assert_eq!(mask_blob(3).len(), 128 + 18);
    }

    #[test]
    fn rope_tables_pair_lanes() {
        let (cos, sin) = rope_tables(2, 4, 10000.0);
        // Position 0: angle 0.
        assert_eq!(&cos[..4], &[1.0; 4]);
        assert_eq!(&sin[..4], &[0.0; 4]);
        // Position 1, pair 0: angle 1; pair 1: angle 10000^-0.5 = 0.01.
        assert_eq!(cos[4], 1f64.cos() as f32);
        assert_eq!(cos[5], cos[4]);
        assert_eq!(sin[6], 0.01f64.sin() as f32);
        assert_eq!(sin[7], sin[6]);
    }
}
