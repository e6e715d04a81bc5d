//! Strided layouts: where the elements of a tensor live inside a buffer.
//!
//! A [`Layout`] maps a multi-index `i` of a tensor of shape `shape` to the element offset
//! `offset + Σ i[d] · strides[d]` inside one buffer (offsets and strides count elements, not
//! bytes). Dense row-major tensors, broadcasts (stride 0), transposes (permuted strides) and
//! slices (moved offset) are all layouts over the same bytes; this is what view folding builds.

/// The largest rank the engine executes (mil-spec 4.8 recommends 8).
pub const MAX_RANK: usize = 8;

/// Offset, shape and per-dimension strides of a tensor inside a buffer, in elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Offset of element `[0, 0, ...]`.
    pub offset: usize,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements between consecutive indices of each dimension (0 broadcasts).
    pub strides: Vec<usize>,
}

/// Row-major strides of `shape`.
pub fn dense_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for idx in (0..shape.len().saturating_sub(1)).rev() {
        strides[idx] = strides[idx + 1] * shape[idx + 1];
    }
    strides
}

impl Layout {
    /// The empty rank-0 layout (used for unused operand slots).
    pub const EMPTY: Layout = Layout {
        offset: 0,
        shape: Vec::new(),
        strides: Vec::new(),
    };

    /// The dense row-major layout of `shape` at offset 0.
    pub fn dense(shape: &[usize]) -> Layout {
        Layout {
            offset: 0,
            shape: shape.to_vec(),
            strides: dense_strides(shape),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// One past the largest element offset this layout touches (`offset` for an empty tensor).
    pub fn end(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Whether this is the dense row-major layout of its shape at offset 0 (size-1 dimensions
    /// may have any stride).
    pub fn is_dense(&self) -> bool {
        self.offset == 0 && self.is_contiguous()
    }

    /// Whether the elements are consecutive in row-major order from `offset` (size-1
    /// dimensions may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// Whether distinct indices map to distinct offsets (no stride-0 broadcast, no overlap):
    /// sorted by stride, each stride exceeds the span of all smaller-stride dimensions.
    pub fn is_injective(&self) -> bool {
        let mut dims: [(usize, usize); MAX_RANK] = [(0, 0); MAX_RANK];
        let mut count = 0;
        for (&n, &s) in self.shape.iter().zip(&self.strides) {
            if n == 0 {
                return true;
            }
            if n > 1 {
                if count == MAX_RANK {
                    return false;
                }
                dims[count] = (s, n);
                count += 1;
            }
        }
        let dims = &mut dims[..count];
        dims.sort_unstable();
        let mut span = 0usize;
        for &(s, n) in dims.iter() {
            if s <= span {
                return false;
            }
            span += s * (n - 1);
        }
        true
    }

    /// The offset of the element at `index` (which may be shorter than the rank: the missing
    /// trailing indices are 0).
    pub fn offset_of(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(&i, &s)| i * s)
                .sum::<usize>()
    }

    /// Permutes the dimensions: dimension `k` of the result is dimension `perm[k]` of `self`.
    pub fn transpose(&self, perm: &[usize]) -> Layout {
        Layout {
            offset: self.offset,
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
        }
    }

    /// The sub-tensor starting at `begin` with `size` elements and index step `step` per
    /// dimension (positive steps only).
    pub fn slice(&self, begin: &[usize], size: &[usize], step: &[usize]) -> Layout {
        Layout {
            offset: self.offset_of(begin),
            shape: size.to_vec(),
            strides: self
                .strides
                .iter()
                .zip(step)
                .map(|(&s, &t)| s * t)
                .collect(),
        }
    }

    /// Broadcasts to `shape` (NumPy rules: left-pad with size-1 dimensions, stretch size-1
    /// dimensions with stride 0). The caller guarantees the shapes are broadcastable.
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let pad = shape.len() - self.rank();
        let mut strides = vec![0usize; shape.len()];
        for (d, &n) in shape.iter().enumerate() {
            if d >= pad {
                let own = self.shape[d - pad];
                strides[d] = if own == n && own != 1 {
                    self.strides[d - pad]
                } else {
                    0
                };
            }
        }
        Layout {
            offset: self.offset,
            shape: shape.to_vec(),
            strides,
        }
    }

    /// The same elements seen with shape `shape` in row-major order, without moving data, if
    /// the strides allow it (NumPy's no-copy reshape). `None` means a copy is needed.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return None;
        }
        if numel == 0 {
            return Some(Layout {
                offset: self.offset,
                shape: shape.to_vec(),
                strides: dense_strides(shape),
            });
        }
        // Non-trivial dimensions of the source.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let new_dims: Vec<usize> = shape.iter().copied().filter(|&n| n != 1).collect();
        let mut new_strides_nontrivial = vec![0usize; new_dims.len()];
        let (mut oi, mut ni) = (0usize, 0usize);
        while oi < old.len() && ni < new_dims.len() {
            // Grow one group on each side until the products agree.
            let (o_start, n_start) = (oi, ni);
            let mut o_prod = old[oi].0;
            let mut n_prod = new_dims[ni];
            oi += 1;
            ni += 1;
            while o_prod != n_prod {
                if o_prod < n_prod {
                    o_prod *= old.get(oi)?.0;
                    oi += 1;
                } else {
                    n_prod *= *new_dims.get(ni)?;
                    ni += 1;
                }
            }
            // The old group must be mergeable into one strided run.
            for k in o_start..oi - 1 {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 {
                    return None;
                }
            }
            let mut stride = old[oi - 1].1;
            for k in (n_start..ni).rev() {
                new_strides_nontrivial[k] = stride;
                stride *= new_dims[k];
            }
        }
        if oi != old.len() || ni != new_dims.len() {
            return None;
        }
        let mut strides = vec![0usize; shape.len()];
        let mut k = new_dims.len();
        let mut inner = 1usize;
        for d in (0..shape.len()).rev() {
            if shape[d] == 1 {
                strides[d] = inner;
            } else {
                k -= 1;
                strides[d] = new_strides_nontrivial[k];
                inner = strides[d] * shape[d];
            }
        }
        Some(Layout {
            offset: self.offset,
            shape: shape.to_vec(),
            strides,
        })
    }

    /// Moves the layout by `delta` elements.
    pub fn shifted(&self, delta: usize) -> Layout {
        Layout {
            offset: self.offset + delta,
            ..self.clone()
        }
    }
}

/// Merges adjacent dimensions that every layout in `layouts` (all of the same shape) can walk
/// as one, and drops size-1 dimensions. The result has rank ≥ 1. Used for elementwise steps so
/// that kernels see long contiguous rows.
pub fn coalesce(layouts: &mut [Layout]) {
    let Some(first) = layouts.first() else { return };
    let shape = first.shape.clone();
    let keep: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &d in &keep {
        if let Some(group) = groups.last_mut() {
            let prev = *group.last().expect("groups are never empty");
            if layouts
                .iter()
                .all(|l| l.strides[prev] == l.strides[d] * shape[d])
            {
                group.push(d);
                continue;
            }
        }
        groups.push(vec![d]);
    }
    for layout in layouts.iter_mut() {
        let mut new_shape = Vec::with_capacity(groups.len().max(1));
        let mut new_strides = Vec::with_capacity(groups.len().max(1));
        for group in &groups {
            new_shape.push(group.iter().map(|&d| shape[d]).product());
            new_strides.push(layout.strides[*group.last().expect("groups are never empty")]);
        }
        if new_shape.is_empty() {
            new_shape.push(1);
            new_strides.push(1);
        }
        layout.shape = new_shape;
        layout.strides = new_strides;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_end() {
        let l = Layout::dense(&[2, 3, 4]);
        assert_eq!(l.strides, vec![12, 4, 1]);
        assert_eq!(l.end(), 24);
        assert!(l.is_dense() && l.is_injective());
        assert_eq!(Layout::dense(&[]).end(), 1);
    }

    #[test]
    fn spatially_packed_weights_reshape_without_copy() {
        // mil-spec 3.9 example C: x [1,4,1,5]; act = x[..., 0:3]; wt = x[..., 3:5].
        let x = Layout::dense(&[1, 4, 1, 5]);
        let act = x.slice(&[0, 0, 0, 0], &[1, 4, 1, 3], &[1, 1, 1, 1]);
        let a2 = act.reshape(&[1, 1, 4, 3]).expect("viewable");
        assert_eq!(a2.strides[2..], [5, 1]);
        let a3 = a2.transpose(&[0, 1, 3, 2]);
        assert_eq!(
            (a3.shape.clone(), a3.strides[2..].to_vec()),
            (vec![1, 1, 3, 4], vec![1, 5])
        );
        let wt = x.slice(&[0, 0, 0, 3], &[1, 4, 1, 2], &[1, 1, 1, 1]);
        let w = wt.reshape(&[1, 1, 4, 2]).expect("viewable");
        assert_eq!((w.offset, w.strides[2..].to_vec()), (3, vec![5, 1]));
    }

    #[test]
    fn reshape_needs_copy_when_strides_break() {
        let t = Layout::dense(&[2, 3]).transpose(&[1, 0]);
        assert_eq!(t.reshape(&[6]), None);
        assert!(t.reshape(&[3, 1, 2]).is_some());
        assert_eq!(t.reshape(&[3, 2]).unwrap().strides, vec![1, 3]);
        // split a strided dim
        let s = Layout::dense(&[4, 6]).slice(&[0, 0], &[4, 4], &[1, 1]);
        let r = s.reshape(&[2, 2, 2, 2]).unwrap();
        assert_eq!(r.strides, vec![12, 6, 2, 1]);
        assert_eq!(s.reshape(&[16]), None);
    }

    #[test]
    fn broadcast_and_injective() {
        let b = Layout::dense(&[1, 3]).broadcast_to(&[2, 4, 3]);
        assert_eq!(b.strides, vec![0, 0, 1]);
        assert!(!b.is_injective());
        let t = Layout::dense(&[3, 5]).transpose(&[1, 0]);
        assert!(t.is_injective());
        let overlap = Layout {
            offset: 0,
            shape: vec![3, 3],
            strides: vec![1, 1],
        };
        assert!(!overlap.is_injective());
    }

    #[test]
    fn coalesce_merges_contiguous_dims() {
        let mut ls = vec![
            Layout::dense(&[2, 3, 4]),
            Layout::dense(&[1, 3, 4]).broadcast_to(&[2, 3, 4]),
        ];
        coalesce(&mut ls);
        assert_eq!(ls[0].shape, vec![2, 12]);
        assert_eq!(ls[1].strides, vec![0, 1]);
        let mut one = vec![Layout::dense(&[1, 1])];
        coalesce(&mut one);
        assert_eq!(one[0].shape, vec![1]);
    }
}
