//! Memory planning: every intermediate (and every step's scratch) is an allocation live over an
//! interval of steps; allocations whose intervals overlap get disjoint byte ranges of one
//! arena, the others may share bytes. Offsets are 64-byte aligned.
//!
//! The assignment is greedy by size (largest first), each allocation placed at the lowest
//! offset that does not collide with an already placed allocation of overlapping lifetime
//! (the "greedy by size" heuristic of TFLite's arena planner).

/// One allocation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes needed.
    pub bytes: usize,
    /// First step that uses it (writes it).
    pub first: usize,
    /// Last step that uses it.
    pub last: usize,
}

/// Offsets for `requests` (same order) and the arena size.
pub fn assign(requests: &[Request]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| requests[b].bytes.cmp(&requests[a].bytes).then(a.cmp(&b)));
    let mut offsets = vec![0usize; requests.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0usize;
    for &idx in &order {
        let request = requests[idx];
        let size = request.bytes.next_multiple_of(64);
        // Ranges of live-overlapping placed allocations, sorted by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&other| {
                let o = requests[other];
                o.first <= request.last && request.first <= o.last
            })
            .map(|&other| {
                (
                    offsets[other],
                    offsets[other] + requests[other].bytes.next_multiple_of(64),
                )
            })
            .collect();
        busy.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in busy {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[idx] = offset;
        arena = arena.max(offset + size);
        placed.push(idx);
    }
    (offsets, arena)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    #[test]
    fn live_allocations_never_overlap_and_dead_ones_share() {
        let requests = [
            Request {
                bytes: 100,
                first: 0,
                last: 1,
            },
            Request {
                bytes: 200,
                first: 1,
                last: 2,
            },
            Request {
                bytes: 100,
                first: 2,
                last: 3,
            },
            Request {
                bytes: 64,
                first: 3,
                last: 3,
            },
        ];
        let (offsets, arena) = assign(&requests);
        for a in 0..requests.len() {
            assert_eq!(offsets[a] % 64, 0);
            for b in a + 1..requests.len() {
                let (ra, rb) = (requests[a], requests[b]);
                if ra.first <= rb.last && rb.first <= ra.last {
                    assert!(!overlaps(
                        (offsets[a], offsets[a] + ra.bytes),
                        (offsets[b], offsets[b] + rb.bytes)
                    ));
                }
            }
        }
        // 0 and 2 are never live together: they can share; the arena is smaller than the sum.
        assert!(arena < 128 + 256 + 128 + 64, "arena {arena}");
        assert_eq!(arena, 256 + 128);
    }

    #[test]
    fn pseudo_random_requests_are_consistent() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let requests: Vec<Request> = (0..60)
            .map(|_| {
                let first = (next() % 40) as usize;
                Request {
                    bytes: 1 + (next() % 5000) as usize,
                    first,
                    last: first + (next() % 10) as usize,
                }
            })
            .collect();
        let (offsets, arena) = assign(&requests);
        for a in 0..requests.len() {
            assert!(offsets[a] + requests[a].bytes <= arena);
            for b in a + 1..requests.len() {
                let (ra, rb) = (requests[a], requests[b]);
                if ra.first <= rb.last && rb.first <= ra.last {
                    assert!(
                        !overlaps(
                            (offsets[a], offsets[a] + ra.bytes),
                            (offsets[b], offsets[b] + rb.bytes)
                        ),
                        "{a} {b}"
                    );
                }
            }
        }
    }
}
