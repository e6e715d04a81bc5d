//! The trainer's one way to spread independent CPU work (cross-entropy row chunks, AdamW and
//! sum-of-squares chunks, weight initialisation, SwiGLU backward) over the machine's threads.
//!
//! Items go to scoped threads round-robin (item `i` on thread `i % threads`); results come
//! back in item order. Which thread runs an item never changes what it computes, so callers
//! that reduce the results in order get the same bits whatever the thread count.

/// Threads for the trainer's CPU sweeps: linalg's pool size (`MILBRIDGE_THREADS` or every
/// core).
pub fn threads() -> usize {
    milbridge_linalg::pool::Pool::global().n_threads().max(1)
}

/// Runs `f` on every item over up to [`threads`] scoped threads (the caller is one of them)
/// and returns the results in item order.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = threads().min(items.len()).max(1);
    if n == 1 {
        return items.into_iter().map(f).collect();
    }
    let mut lanes: Vec<Vec<(usize, T)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        lanes[i % n].push((i, item));
    }
    let f = &f;
    let run = move |lane: Vec<(usize, T)>| -> Vec<(usize, R)> {
        lane.into_iter().map(|(i, item)| (i, f(item))).collect()
    };
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let mut lanes = lanes.into_iter();
        let mine = lanes.next().unwrap_or_default();
        let handles: Vec<_> = lanes.map(|lane| scope.spawn(move || run(lane))).collect();
        let mut out = run(mine);
        for h in handles {
            out.extend(
                h.join()
                    .expect("invariant: trainer CPU work does not panic"),
            );
        }
        out
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<usize> = (0..37).collect();
        assert_eq!(
            super::map(items.clone(), |i| i * i),
            items.iter().map(|i| i * i).collect::<Vec<_>>()
        );
        assert!(super::map(Vec::<u8>::new(), |x| x).is_empty());
    }
}
