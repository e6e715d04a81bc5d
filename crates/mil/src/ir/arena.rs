//! Arenas with typed handles, and side tables keyed by handle (naga's `Arena`/`Handle`,
//! cranelift's `PrimaryMap`/`SecondaryMap`).

use crate::span::Span;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::num::NonZeroU32;

/// A typed index into an [`Arena<T>`]. `Option<Handle<T>>` is the size of a `u32`.
pub struct Handle<T> {
    index_plus_one: NonZeroU32,
    marker: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The handle of the `index`-th entry. Panics if `index` does not fit a `u32` minus one
    /// (arenas never grow that large: lowering refuses inputs over 4 GiB).
    pub fn from_index(index: usize) -> Handle<T> {
        let raw = u32::try_from(index + 1).expect("arena index fits u32");
        Handle {
            index_plus_one: NonZeroU32::new(raw).expect("index + 1 is non-zero"),
            marker: PhantomData,
        }
    }

    /// The zero-based position in the arena.
    pub fn index(self) -> usize {
        self.index_plus_one.get() as usize - 1
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index_plus_one == other.index_plus_one
    }
}
impl<T> Eq for Handle<T> {}
impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Handle<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index_plus_one.cmp(&other.index_plus_one)
    }
}
impl<T> Hash for Handle<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index_plus_one.hash(state);
    }
}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = std::any::type_name::<T>();
        let short = full.rsplit("::").next().unwrap_or(full);
        write!(f, "{short}#{}", self.index())
    }
}

/// Append-only storage of `T` with a [`Span`] per entry.
#[derive(Clone)]
pub struct Arena<T> {
    data: Vec<T>,
    spans: Vec<Span>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            data: Vec::new(),
            spans: Vec::new(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Arena<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> Arena<T> {
    /// An empty arena.
    pub fn new() -> Arena<T> {
        Arena::default()
    }

    /// Appends `value` with its source `span` and returns its handle.
    pub fn append(&mut self, value: T, span: Span) -> Handle<T> {
        let handle = Handle::from_index(self.data.len());
        self.data.push(value);
        self.spans.push(span);
        handle
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The entry for `handle`, if it belongs to this arena.
    pub fn try_get(&self, handle: Handle<T>) -> Option<&T> {
        self.data.get(handle.index())
    }

    /// Mutable access, for the lowering pass that builds the arena. Later passes never patch
    /// entries in place; they record facts in side tables.
    pub fn get_mut(&mut self, handle: Handle<T>) -> &mut T {
        &mut self.data[handle.index()]
    }

    /// The source span of `handle`.
    pub fn span(&self, handle: Handle<T>) -> Span {
        self.spans
            .get(handle.index())
            .copied()
            .unwrap_or(Span::UNDEFINED)
    }

    /// Entries in insertion order with their handles.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Handle<T>, &T)> + '_ {
        self.data
            .iter()
            .enumerate()
            .map(|(idx, value)| (Handle::from_index(idx), value))
    }

    /// Handles in insertion order.
    pub fn handles(&self) -> impl ExactSizeIterator<Item = Handle<T>> + use<T> {
        (0..self.data.len()).map(Handle::from_index)
    }
}

impl<T> std::ops::Index<Handle<T>> for Arena<T> {
    type Output = T;
    fn index(&self, handle: Handle<T>) -> &T {
        &self.data[handle.index()]
    }
}

/// A side table with one `V` per handle of an `Arena<K>`.
#[derive(Clone)]
pub struct HandleVec<K, V> {
    data: Vec<V>,
    marker: PhantomData<fn() -> K>,
}

impl<K, V: fmt::Debug> fmt::Debug for HandleVec<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.data.iter()).finish()
    }
}

impl<K, V> Default for HandleVec<K, V> {
    fn default() -> Self {
        HandleVec {
            data: Vec::new(),
            marker: PhantomData,
        }
    }
}

impl<K, V> HandleVec<K, V> {
    /// A table of `len` copies of `fill`.
    pub fn filled(len: usize, fill: V) -> HandleVec<K, V>
    where
        V: Clone,
    {
        HandleVec {
            data: vec![fill; len],
            marker: PhantomData,
        }
    }

    /// A table built from `f(handle)` for each of `len` handles.
    pub fn from_fn(len: usize, mut f: impl FnMut(Handle<K>) -> V) -> HandleVec<K, V> {
        HandleVec {
            data: (0..len).map(|idx| f(Handle::from_index(idx))).collect(),
            marker: PhantomData,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends the entry for the next handle.
    pub fn push(&mut self, value: V) -> Handle<K> {
        let handle = Handle::from_index(self.data.len());
        self.data.push(value);
        handle
    }

    /// The entry for `handle`, if within the table.
    pub fn get(&self, handle: Handle<K>) -> Option<&V> {
        self.data.get(handle.index())
    }

    /// Entries with their handles.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Handle<K>, &V)> + '_ {
        self.data
            .iter()
            .enumerate()
            .map(|(idx, value)| (Handle::from_index(idx), value))
    }
}

impl<K, V> std::ops::Index<Handle<K>> for HandleVec<K, V> {
    type Output = V;
    fn index(&self, handle: Handle<K>) -> &V {
        &self.data[handle.index()]
    }
}

impl<K, V> std::ops::IndexMut<Handle<K>> for HandleVec<K, V> {
    fn index_mut(&mut self, handle: Handle<K>) -> &mut V {
        &mut self.data[handle.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_handle_is_small() {
        assert_eq!(std::mem::size_of::<Option<Handle<u8>>>(), 4);
    }

    #[test]
    fn arena_and_side_table() {
        let mut arena = Arena::new();
        let a = arena.append("a", Span::new(0, 1));
        let b = arena.append("b", Span::new(2, 3));
        assert_eq!(arena[b], "b");
        assert_eq!(arena.span(a), Span::new(0, 1));
        let mut table: HandleVec<&str, u32> = HandleVec::filled(arena.len(), 0);
        table[b] = 7;
        assert_eq!(table[b], 7);
        assert_eq!(format!("{a:?}"), "&str#0");
    }
}
