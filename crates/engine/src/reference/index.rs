//! Multi-index arithmetic shared by the reference ops: row-major strides, (un)ravelling,
//! NumPy broadcasting (mil-spec 4.6) and axis normalisation (mil-spec 4.7).

/// Number of elements of `shape` (1 for rank 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    strides
}

/// The multi-index of row-major position `linear` in `shape`.
pub fn unravel(mut linear: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        index[axis] = linear % shape[axis];
        linear /= shape[axis];
    }
    index
}

/// The row-major position of multi-index `index` in `shape`.
pub fn ravel(index: &[usize], shape: &[usize]) -> usize {
    debug_assert_eq!(
        index.len(),
        shape.len(),
        "ravel: index rank equals shape rank"
    );
    index.iter().zip(shape).fold(0, |acc, (&i, &n)| {
        debug_assert!(i < n, "ravel: index {i} within dimension {n}");
        acc * n + i
    })
}

/// The NumPy broadcast of several shapes: left-pad with 1s, then each axis must agree or be 1.
/// `None` when they are not broadcastable.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|shape| shape.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for shape in shapes {
        let pad = rank - shape.len();
        for (axis, &dim) in shape.iter().enumerate() {
            let slot = &mut out[pad + axis];
            if *slot == 1 {
                *slot = dim;
            } else if dim != 1 && dim != *slot {
                return None;
            }
        }
    }
    Some(out)
}

/// The row-major position in an input of shape `in_shape` that broadcasts to output multi-index
/// `out_index` (the input is right-aligned; its size-1 axes read index 0).
pub fn broadcast_source(out_index: &[usize], in_shape: &[usize]) -> usize {
    let pad = out_index.len() - in_shape.len();
    in_shape.iter().enumerate().fold(0, |acc, (axis, &dim)| {
        let i = if dim == 1 { 0 } else { out_index[pad + axis] };
        acc * dim + i
    })
}

/// Normalises an axis for rank `rank`: valid when `-rank <= axis < rank` (mil-spec 4.7).
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let normalized = if axis < 0 { axis + rank } else { axis };
    (0..rank)
        .contains(&normalized)
        .then_some(normalized as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ravel_unravel_round_trip() {
        let shape = [2, 3, 4];
        assert_eq!(strides(&shape), vec![12, 4, 1]);
        for linear in 0..numel(&shape) {
            assert_eq!(ravel(&unravel(linear, &shape), &shape), linear);
        }
        assert_eq!(unravel(23, &shape), vec![1, 2, 3]);
        assert_eq!(numel(&[]), 1);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }

    #[test]
    fn broadcasting_rules() {
        assert_eq!(
            broadcast_shapes(&[&[1, 4, 1, 8], &[1, 1, 1, 8]]),
            Some(vec![1, 4, 1, 8])
        );
        assert_eq!(broadcast_shapes(&[&[], &[3, 2]]), Some(vec![3, 2]));
        assert_eq!(
            broadcast_shapes(&[&[5, 1], &[4], &[1, 1, 1]]),
            Some(vec![1, 5, 4])
        );
        assert_eq!(broadcast_shapes(&[&[3], &[4]]), None);
        assert_eq!(broadcast_source(&[1, 2, 3], &[2, 1]), 2);
        assert_eq!(broadcast_source(&[1, 2, 3], &[]), 0);
        assert_eq!(broadcast_source(&[1, 2, 3], &[1, 3]), 3);
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis(-1, 4), Some(3));
        assert_eq!(normalize_axis(-4, 4), Some(0));
        assert_eq!(normalize_axis(4, 4), None);
        assert_eq!(normalize_axis(-5, 4), None);
        assert_eq!(normalize_axis(0, 0), None);
    }
}
