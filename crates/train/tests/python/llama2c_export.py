"""Writes llama2.c model files with NumPy the way llama2.c's export.py does, independently of
milbridge, for crates/train/tests/llama2c.rs.

    python3 llama2c_export.py OUT_DIR DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ SEED

Writes into OUT_DIR:
  legacy.bin    legacy_export (version 0): 7 x int32 header, fp32 tensors in run.c's order,
                freqs_cos / freqs_sin as model.py's precompute_freqs_cis computes them (float32)
  v1.bin        version1_export: 256-byte "ak42" header, fp32 tensors in version-1 order
  unshared.bin  legacy_export of the same model with an unshared classifier (negative vocab,
                wcls last)
  params.f32    every tensor, fp32 little-endian, in milbridge's checkpoint order (embedding,
                final norm, then per layer wq wk wv wo w1 w2 w3 attention_norm ffn_norm)
"""
import os
import struct
import sys

import numpy as np


def main():
    out_dir = sys.argv[1]
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq, seed = map(int, sys.argv[2:10])
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    rng = np.random.default_rng(seed)

    def randn(*shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    embed = randn(vocab, dim, std=0.5)
    layers = []
    for _ in range(n_layers):
        layers.append({
            "wq": randn(dim, dim), "wk": randn(kv_dim, dim), "wv": randn(kv_dim, dim),
            "wo": randn(dim, dim), "w1": randn(hidden, dim), "w2": randn(dim, hidden),
            "w3": randn(hidden, dim),
            "attention_norm": (1.0 + randn(dim)).astype(np.float32),
            "ffn_norm": (1.0 + randn(dim)).astype(np.float32),
        })
    norm = (1.0 + randn(dim)).astype(np.float32)
    wcls = randn(vocab, dim, std=0.5)

    # model.py's precompute_freqs_cis(dim // n_heads, max_seq_len), in float32
    exponents = np.arange(0, head_size, 2)[: head_size // 2].astype(np.float32) / np.float32(head_size)
    freqs = (np.float32(1.0) / (np.float32(10000.0) ** exponents)).astype(np.float32)
    t = np.arange(seq).astype(np.float32)
    angles = np.outer(t, freqs).astype(np.float32)
    freqs_cos = np.cos(angles).astype(np.float32)
    freqs_sin = np.sin(angles).astype(np.float32)

    def serialize_fp32(f, tensor):
        f.write(np.ascontiguousarray(tensor, dtype="<f4").tobytes())

    def legacy_export(path, shared):
        with open(path, "wb") as f:
            v = vocab if shared else -vocab
            f.write(struct.pack("<iiiiiii", dim, hidden, n_layers, n_heads, n_kv_heads, v, seq))
            serialize_fp32(f, embed)
            for key in ["attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"]:
                for layer in layers:
                    serialize_fp32(f, layer[key])
            serialize_fp32(f, norm)
            serialize_fp32(f, freqs_cos)
            serialize_fp32(f, freqs_sin)
            if not shared:
                serialize_fp32(f, wcls)

    def version1_export(path):
        with open(path, "wb") as f:
            f.write(struct.pack("<I", 0x616B3432))
            f.write(struct.pack("<i", 1))
            f.write(struct.pack("<iiiiiii", dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq))
            f.write(struct.pack("<B", 1))
            f.write(b"\0" * (256 - f.tell()))
            weights = [
                *[layer["attention_norm"] for layer in layers],
                *[layer["ffn_norm"] for layer in layers],
                norm,
                embed,
            ]
            for key in ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]:
                weights += [layer[key] for layer in layers]
            for w in weights:
                serialize_fp32(f, w)

    legacy_export(os.path.join(out_dir, "legacy.bin"), shared=True)
    legacy_export(os.path.join(out_dir, "unshared.bin"), shared=False)
    version1_export(os.path.join(out_dir, "v1.bin"))
    with open(os.path.join(out_dir, "params.f32"), "wb") as f:
        serialize_fp32(f, embed)
        serialize_fp32(f, norm)
        for layer in layers:
            for key in ["wq", "wk", "wv", "wo", "w1", "w2", "w3", "attention_norm", "ffn_norm"]:
                serialize_fp32(f, layer[key])


if __name__ == "__main__":
    main()
