//! `SharedBuffer` through its public API, in one process.

#![cfg(target_os = "linux")]

use std::fs;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use half::{bf16, f16};
use milbridge_surface::{ALIGN, Error, SharedBuffer};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn buffer_and_file_map_are_send_and_sync() {
    assert_send_sync::<SharedBuffer>();
    assert_send_sync::<milbridge_surface::FileMap>();
}

#[test]
fn new_buffer_is_zero_filled_with_the_requested_size() {
    for len in [1, 63, 64, 65, 4095, 4096, 4097, 1 << 20] {
        let buf = SharedBuffer::new(len).unwrap();
        assert_eq!(buf.len(), len);
        assert!(!buf.is_empty());
        assert_eq!(buf.generation(), 0);
        let mut out = vec![0xAAu8; len];
        buf.read_bytes(0, &mut out).unwrap();
        assert!(
            out.iter().all(|&byte| byte == 0),
            "len {len} not zero-filled"
        );
    }
}

#[test]
fn zero_size_is_rejected() {
    assert!(matches!(SharedBuffer::new(0), Err(Error::ZeroSize)));
}

#[test]
fn absurd_size_is_an_error_not_a_panic() {
    let err = SharedBuffer::new(usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Os { .. }), "{err:?}");
}

#[test]
fn base_is_aligned_to_64_bytes() {
    for len in [1, 3, 100, 4096, 12345] {
        let buf = SharedBuffer::new(len).unwrap();
        assert_eq!(buf.as_ptr().addr() % ALIGN, 0);
        assert_eq!(buf.lock_read().as_ptr().addr() % ALIGN, 0);
        assert_eq!(buf.lock_write().as_mut_ptr().addr() % ALIGN, 0);
    }
}

#[test]
fn ids_are_unique() {
    let first = SharedBuffer::new(8).unwrap();
    let second = SharedBuffer::new(8).unwrap();
    let alias = SharedBuffer::from_fd(first.try_clone_fd().unwrap(), 8).unwrap();
    assert_ne!(first.id(), second.id());
    assert_ne!(first.id(), alias.id());
    assert_ne!(second.id(), alias.id());
}

#[test]
fn bytes_round_trip() {
    let buf = SharedBuffer::new(100).unwrap();
    let src: Vec<u8> = (0..37).collect();
    buf.write_bytes(50, &src).unwrap();
    let mut out = vec![0u8; 37];
    buf.read_bytes(50, &mut out).unwrap();
    assert_eq!(out, src);
    // The bytes around the write are untouched.
    let mut all = vec![0u8; 100];
    buf.read_bytes(0, &mut all).unwrap();
    assert!(all[..50].iter().all(|&byte| byte == 0));
    assert_eq!(&all[50..87], &src[..]);
    assert!(all[87..].iter().all(|&byte| byte == 0));
}

#[test]
fn f16_round_trip_is_native_endian_at_element_offsets() {
    let buf = SharedBuffer::new(64).unwrap();
    let src: Vec<f16> = [1.0f32, -2.5, 0.333, 65504.0, -0.0]
        .iter()
        .map(|&value| f16::from_f32(value))
        .collect();
    buf.write_f16(3, &src).unwrap();
    let mut out = vec![f16::ZERO; src.len()];
    buf.read_f16(3, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|value| value.to_bits()).collect::<Vec<_>>(),
        src.iter().map(|value| value.to_bits()).collect::<Vec<_>>()
    );
    let mut raw = [0u8; 2];
    buf.read_bytes(6, &mut raw).unwrap();
    assert_eq!(u16::from_ne_bytes(raw), f16::from_f32(1.0).to_bits());
}

#[test]
fn f32_round_trip_is_native_endian_at_element_offsets() {
    let buf = SharedBuffer::new(4 * 10).unwrap();
    let src = [1.5f32, f32::MIN_POSITIVE, -7.25, f32::INFINITY];
    buf.write_f32(6, &src).unwrap();
    let mut out = [0f32; 4];
    buf.read_f32(6, &mut out).unwrap();
    assert_eq!(out.map(f32::to_bits), src.map(f32::to_bits));
    let mut raw = [0u8; 4];
    buf.read_bytes(24, &mut raw).unwrap();
    assert_eq!(f32::from_ne_bytes(raw), 1.5);
    // The last element fits exactly.
    buf.write_f32(9, &[3.0]).unwrap();
}

#[test]
fn nan_bits_survive_the_copy() {
    let buf = SharedBuffer::new(8).unwrap();
    let nan = f32::from_bits(0x7fc0_1234);
    buf.write_f32(1, &[nan]).unwrap();
    let mut out = [0f32];
    buf.read_f32(1, &mut out).unwrap();
    assert_eq!(out[0].to_bits(), 0x7fc0_1234);
}

#[test]
fn generic_slices_round_trip() {
    let buf = SharedBuffer::new(256).unwrap();
    let bf = [bf16::from_f32(1.0), bf16::from_f32(-3.0)];
    buf.write_slice(10, &bf).unwrap();
    let mut bf_out = [bf16::ZERO; 2];
    buf.read_slice(10, &mut bf_out).unwrap();
    assert_eq!(bf_out, bf);

    let ids = [7i32, -1, i32::MAX];
    buf.write_slice(20, &ids).unwrap();
    let mut ids_out = [0i32; 3];
    buf.read_slice(20, &mut ids_out).unwrap();
    assert_eq!(ids_out, ids);

    let wide = [u64::MAX, 1];
    buf.write_slice(30, &wide).unwrap();
    let mut wide_out = [0u64; 2];
    buf.read_slice(30, &mut wide_out).unwrap();
    assert_eq!(wide_out, wide);
}

#[test]
fn out_of_bounds_writes_and_reads_are_errors() {
    let buf = SharedBuffer::new(16).unwrap();
    let err = buf.write_bytes(10, &[0; 7]).unwrap_err();
    assert!(matches!(
        err,
        Error::OutOfBounds {
            offset: 10,
            len: 7,
            size: 16
        }
    ));
    assert!(matches!(
        buf.read_bytes(17, &mut []),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        buf.write_f32(4, &[1.0]),
        Err(Error::OutOfBounds {
            offset: 16,
            len: 4,
            size: 16
        })
    ));
    assert!(matches!(
        buf.read_f16(7, &mut [f16::ZERO; 2]),
        Err(Error::OutOfBounds { .. })
    ));
    // A rejected write changes neither the bytes nor the generation.
    let mut out = [0u8; 16];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [0u8; 16]);
    assert_eq!(buf.generation(), 0);
    // Zero-length accesses at the very end are fine.
    buf.write_bytes(16, &[]).unwrap();
    buf.read_f32(4, &mut []).unwrap();
}

#[test]
fn overflowing_offsets_are_errors_not_panics() {
    let buf = SharedBuffer::new(16).unwrap();
    // offset + len overflows usize
    assert!(matches!(
        buf.write_bytes(usize::MAX, &[1, 2]),
        Err(Error::OutOfBounds {
            offset: usize::MAX,
            len: 2,
            size: 16
        })
    ));
    assert!(matches!(
        buf.read_bytes(usize::MAX - 1, &mut [0; 4]),
        Err(Error::OutOfBounds { .. })
    ));
    // offset_elems * size_of overflows usize
    assert!(matches!(
        buf.write_f32(usize::MAX / 2, &[1.0]),
        Err(Error::OutOfBounds {
            offset: usize::MAX,
            len: 4,
            size: 16
        })
    ));
    assert!(matches!(
        buf.read_f16(usize::MAX, &mut [f16::ZERO]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        buf.write_slice(usize::MAX / 4, &[1u64]),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn copy_to_copies_everything_and_bumps_the_destination() {
    let src = SharedBuffer::new(4096 + 5).unwrap();
    let dst = SharedBuffer::new(4096 + 5).unwrap();
    let pattern: Vec<u8> = (0..4096 + 5).map(|index| (index % 251) as u8).collect();
    src.write_bytes(0, &pattern).unwrap();
    let src_generation = src.generation();
    src.copy_to(&dst).unwrap();
    let mut out = vec![0u8; pattern.len()];
    dst.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, pattern);
    assert_eq!(dst.generation(), 1);
    assert_eq!(src.generation(), src_generation);
    // Both lock orders (by id) work.
    dst.fill_zero();
    dst.copy_to(&src).unwrap();
    src.read_bytes(0, &mut out).unwrap();
    assert!(out.iter().all(|&byte| byte == 0));
}

#[test]
fn copy_to_requires_equal_sizes() {
    let src = SharedBuffer::new(16).unwrap();
    let dst = SharedBuffer::new(32).unwrap();
    assert!(matches!(
        src.copy_to(&dst),
        Err(Error::SizeMismatch { src: 16, dst: 32 })
    ));
    assert_eq!(dst.generation(), 0);
}

#[test]
fn copy_to_self_is_a_no_op() {
    let buf = SharedBuffer::new(16).unwrap();
    buf.write_bytes(0, &[9; 16]).unwrap();
    buf.copy_to(&buf).unwrap();
    let mut out = [0u8; 16];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [9; 16]);
}

#[test]
fn copy_to_another_handle_of_the_same_memory_keeps_the_bytes() {
    let buf = SharedBuffer::new(64).unwrap();
    buf.write_bytes(0, &[5; 64]).unwrap();
    let alias = SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 64).unwrap();
    buf.copy_to(&alias).unwrap();
    alias.copy_to(&buf).unwrap();
    let mut out = [0u8; 64];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [5; 64]);
}

#[test]
fn concurrent_opposite_copies_do_not_deadlock() {
    let first = SharedBuffer::new(1 << 16).unwrap();
    let second = SharedBuffer::new(1 << 16).unwrap();
    thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..200 {
                first.copy_to(&second).unwrap();
            }
        });
        scope.spawn(|| {
            for _ in 0..200 {
                second.copy_to(&first).unwrap();
            }
        });
    });
}

#[test]
fn fill_zero_clears_and_bumps() {
    let buf = SharedBuffer::new(33).unwrap();
    buf.write_bytes(0, &[0xFF; 33]).unwrap();
    buf.fill_zero();
    let mut out = [1u8; 33];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [0; 33]);
    assert_eq!(buf.generation(), 2);
}

#[test]
fn generation_counts_writes_not_reads() {
    let buf = SharedBuffer::new(64).unwrap();
    assert_eq!(buf.generation(), 0);
    buf.write_bytes(0, &[1]).unwrap();
    assert_eq!(buf.generation(), 1);
    buf.write_f16(1, &[f16::ONE]).unwrap();
    assert_eq!(buf.generation(), 2);
    buf.write_f32(1, &[1.0]).unwrap();
    assert_eq!(buf.generation(), 3);
    let mut out = [0f32; 2];
    buf.read_f32(0, &mut out).unwrap();
    buf.read_bytes(0, &mut [0; 4]).unwrap();
    drop(buf.lock_read());
    assert_eq!(buf.generation(), 3);
    {
        let mut guard = buf.lock_write();
        guard.write_bytes(0, &[2]).unwrap();
        guard.write_slice(1, &[3u8]).unwrap();
        // The bump happens when the guard is released, once.
    }
    assert_eq!(buf.generation(), 4);
    let other = SharedBuffer::new(64).unwrap();
    buf.copy_to(&other).unwrap();
    assert_eq!(buf.generation(), 4);
    assert_eq!(other.generation(), 1);
}

#[test]
fn writes_through_another_handle_do_not_bump_this_one() {
    let buf = SharedBuffer::new(8).unwrap();
    let alias = SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 8).unwrap();
    alias.write_bytes(0, &[1, 2, 3]).unwrap();
    assert_eq!(alias.generation(), 1);
    assert_eq!(buf.generation(), 0);
    let mut out = [0u8; 3];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn two_readers_share_the_lock() {
    let buf = SharedBuffer::new(16).unwrap();
    let first = buf.lock_read();
    let second = buf.lock_read();
    assert!(buf.try_lock_read().is_some());
    assert_eq!(first.len(), 16);
    assert_eq!(second.len(), 16);
    // A reader on another thread gets in too while both are held.
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let guard = buf.lock_read();
                let mut out = [1u8; 16];
                guard.read_bytes(0, &mut out).unwrap();
                assert_eq!(out, [0; 16]);
            })
            .join()
            .unwrap();
    });
    assert!(buf.try_lock_write().is_none());
    drop(first);
    assert!(buf.try_lock_write().is_none());
    drop(second);
    assert!(buf.try_lock_write().is_some());
}

#[test]
fn a_writer_excludes_readers_and_writers() {
    let buf = SharedBuffer::new(16).unwrap();
    let guard = buf.lock_write();
    assert!(buf.try_lock_write().is_none());
    assert!(buf.try_lock_read().is_none());
    drop(guard);
    assert!(buf.try_lock_read().is_some());
}

#[test]
fn a_writer_blocks_while_a_reader_holds_the_lock() {
    let buf = SharedBuffer::new(16).unwrap();
    let reader = buf.lock_read();
    let (started_tx, started_rx) = mpsc::channel();
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            started_tx.send(()).unwrap();
            buf.write_bytes(0, &[7; 16]).unwrap();
        });
        started_rx.recv().unwrap();
        // However long we wait, the writer cannot finish while `reader` is held. (The sleeps only
        // give a broken lock the chance to show itself; nothing here depends on their length.)
        for _ in 0..5 {
            thread::sleep(Duration::from_millis(10));
            assert!(!writer.is_finished());
            let mut out = [1u8; 16];
            reader.read_bytes(0, &mut out).unwrap();
            assert_eq!(out, [0; 16], "write landed while a reader held the lock");
        }
        assert_eq!(buf.generation(), 0);
        drop(reader);
        writer.join().unwrap();
    });
    let mut out = [0u8; 16];
    buf.read_bytes(0, &mut out).unwrap();
    assert_eq!(out, [7; 16]);
    assert_eq!(buf.generation(), 1);
}

#[test]
fn guards_copy_and_bound_check() {
    let buf = SharedBuffer::new(8).unwrap();
    {
        let mut guard = buf.lock_write();
        assert_eq!(guard.len(), 8);
        guard.write_slice(1, &[1.0f32]).unwrap();
        assert!(matches!(
            guard.write_bytes(5, &[0; 4]),
            Err(Error::OutOfBounds { .. })
        ));
        let mut out = [0f32];
        guard.read_slice(1, &mut out).unwrap();
        assert_eq!(out, [1.0]);
        guard.fill_zero();
        guard.read_slice(1, &mut out).unwrap();
        assert_eq!(out, [0.0]);
    }
    let guard = buf.lock_read();
    assert!(matches!(
        guard.read_slice(2, &mut [0f32]),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn from_fd_shares_memory_with_the_original() {
    let buf = SharedBuffer::new(4096 * 3).unwrap();
    let alias = SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 4096 * 3).unwrap();
    assert_ne!(buf.as_ptr(), alias.as_ptr());
    buf.write_f32(1000, &[42.0]).unwrap();
    let mut out = [0f32];
    alias.read_f32(1000, &mut out).unwrap();
    assert_eq!(out, [42.0]);
    // A shorter mapping of the same file is fine too.
    let prefix = SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 100).unwrap();
    assert_eq!(prefix.len(), 100);
    // Dropping the original keeps the alias's memory alive.
    drop(buf);
    alias.read_f32(1000, &mut out).unwrap();
    assert_eq!(out, [42.0]);
}

#[test]
fn from_fd_rejects_a_short_file_and_zero_length() {
    let buf = SharedBuffer::new(100).unwrap();
    let err = SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 101).unwrap_err();
    assert!(matches!(
        err,
        Error::FileTooSmall {
            file_size: 100,
            len: 101
        }
    ));
    assert!(matches!(
        SharedBuffer::from_fd(buf.try_clone_fd().unwrap(), 0),
        Err(Error::ZeroSize)
    ));
}

#[test]
fn from_fd_of_a_read_only_descriptor_fails_cleanly() {
    let buf = SharedBuffer::new(16).unwrap();
    let path = format!("/proc/self/fd/{}", buf.fd().as_raw_fd());
    let read_only = fs::File::open(path).unwrap();
    let err = SharedBuffer::from_fd(read_only.into(), 16).unwrap_err();
    assert!(matches!(err, Error::Os { op: "mmap", .. }), "{err:?}");
}

#[test]
fn open_maps_a_proc_fd_path() {
    let buf = SharedBuffer::new(64).unwrap();
    buf.write_bytes(0, b"hello").unwrap();
    let alias = SharedBuffer::open(format!("/proc/self/fd/{}", buf.fd().as_raw_fd()), 64).unwrap();
    let mut out = [0u8; 5];
    alias.read_bytes(0, &mut out).unwrap();
    assert_eq!(&out, b"hello");
    let err = SharedBuffer::open("/nonexistent/milbridge-surface", 64).unwrap_err();
    assert!(matches!(err, Error::File { op: "open", .. }), "{err:?}");
}

/// `O_CLOEXEC` as `/proc/self/fdinfo` prints it (octal flags).
const O_CLOEXEC_OCTAL: u32 = 0o2_000_000;

fn fd_flags(fd: i32) -> u32 {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

#[test]
fn descriptors_are_close_on_exec_except_the_inheritable_clone() {
    let buf = SharedBuffer::new(16).unwrap();
    assert_ne!(fd_flags(buf.fd().as_raw_fd()) & O_CLOEXEC_OCTAL, 0);
    let clone = buf.try_clone_fd().unwrap();
    assert_ne!(fd_flags(clone.as_raw_fd()) & O_CLOEXEC_OCTAL, 0);
    let inheritable = buf.try_clone_fd_inheritable().unwrap();
    assert_eq!(fd_flags(inheritable.as_raw_fd()) & O_CLOEXEC_OCTAL, 0);
}

#[test]
fn memfd_is_named_for_debugging() {
    let buf = SharedBuffer::new(16).unwrap();
    let target = fs::read_link(format!("/proc/self/fd/{}", buf.fd().as_raw_fd())).unwrap();
    assert!(
        target.to_string_lossy().contains("memfd:milbridge-surface"),
        "{target:?}"
    );
}

#[test]
fn debug_output_shows_identity_not_contents() {
    let buf = SharedBuffer::new(16).unwrap();
    let text = format!("{buf:?}");
    assert!(text.starts_with("SharedBuffer {"), "{text}");
    assert!(text.contains("len: 16"), "{text}");
}
