//! Repository-wide checks that run as ordinary tests (rust-analyzer's tidy approach).
//! See `tidy.rs`.

#[cfg(test)]
mod tidy;
