//! An ordered map from tokens to what waits on them, for keys that mostly arrive in
//! increasing order and mostly leave oldest first: the publishes in flight.
//!
//! Why not `BTreeMap`: the host inserts and removes a token in three maps per publish (the
//! guest's token → the host's, the host's → its publish, → its waiter), and a B-tree node
//! shifts its neighbours on every insertion and removal: with the 208-byte publishes as
//! values that was about 1,300 of the 25,000 instructions a QoS 1 message cost in the
//! `mqtt-bench instructions` harness (callgrind), a twentieth of the whole. Here the common
//! case is a push at the back and a take at the front. Ordered (not a hash map) because a
//! restart replays what waits in token order, and iteration must not depend on a hasher.

use alloc::collections::VecDeque;

/// Keys in increasing order with their values; a removed entry leaves `None` in its slot
/// until the slots around it go (removal at either end trims them, and they are compacted
/// when they outnumber the live entries), so memory stays within a few times the live
/// entries whatever the order of removal.
#[derive(Clone, Debug)]
pub struct TokenMap<V> {
    slots: VecDeque<(u64, Option<V>)>,
    live: usize,
}

impl<V> Default for TokenMap<V> {
    fn default() -> Self {
        TokenMap { slots: VecDeque::new(), live: 0 }
    }
}

impl<V> TokenMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn position(&self, key: u64) -> Result<usize, usize> {
        // The oldest first: most removals take the front.
        match self.slots.front() {
            Some((k, _)) if *k == key => Ok(0),
            _ => self.slots.binary_search_by_key(&key, |(k, _)| *k),
        }
    }

    /// As `BTreeMap::insert`: the value the key had, if any.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if self.slots.back().is_none_or(|(last, _)| *last < key) {
            self.slots.push_back((key, Some(value)));
            self.live += 1;
            return None;
        }
        match self.position(key) {
            Ok(i) => {
                let old = self.slots[i].1.replace(value);
                self.live += usize::from(old.is_none());
                old
            }
            Err(i) => {
                self.slots.insert(i, (key, Some(value)));
                self.live += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, key: u64) -> Option<V> {
        let i = self.position(key).ok()?;
        let value = if i == 0 {
            // The common case, and the slot goes with it (the ends are always live).
            self.slots.pop_front()?.1?
        } else {
            self.slots[i].1.take()?
        };
        self.live -= 1;
        self.trim();
        Some(value)
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        self.slots.get(self.position(key).ok()?)?.1.as_ref()
    }

    /// Live entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.slots.iter().filter_map(|(k, v)| Some((*k, v.as_ref()?)))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(u64, &V) -> bool) {
        self.slots.retain(|(k, v)| v.as_ref().is_some_and(|v| keep(*k, v)));
        self.live = self.slots.len();
    }

    /// Drops the empty slots at either end, and all of them once they outnumber the live
    /// entries (an old entry that stays while later ones come and go).
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some((_, None))) {
            self.slots.pop_front();
        }
        while matches!(self.slots.back(), Some((_, None))) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.live + 16 {
            self.slots.retain(|(_, v)| v.is_some());
        }
    }
}

impl<V> IntoIterator for TokenMap<V> {
    type Item = (u64, V);
    type IntoIter = core::iter::FilterMap<alloc::collections::vec_deque::IntoIter<(u64, Option<V>)>, fn((u64, Option<V>)) -> Option<(u64, V)>>;

    /// Live entries in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.slots.into_iter().filter_map(|(k, v)| Some((k, v?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Retain(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small keys, so that inserts land before, between and on existing ones.
        prop_oneof![
            4 => (0u64..64, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (0u64..64).prop_map(Op::Remove),
            1 => (1u64..5).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Whatever the order of insertions and removals, it answers as a `BTreeMap` does.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut ours, mut model) = (TokenMap::new(), BTreeMap::new());
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(ours.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(k), model.remove(&k)),
                    Op::Retain(m) => {
                        ours.retain(|k, _| k % m != 0);
                        model.retain(|k, _| k % m != 0);
                    }
                }
                prop_assert_eq!(ours.len(), model.len());
                prop_assert!(ours.iter().map(|(k, v)| (k, *v)).eq(model.iter().map(|(k, v)| (*k, *v))));
                prop_assert!(ours.clone().into_iter().eq(model.clone()));
                for k in 0..64 {
                    prop_assert_eq!(ours.get(k), model.get(&k));
                }
                prop_assert!(ours.slots.len() <= 2 * ours.live + 16, "{} slots for {} entries", ours.slots.len(), ours.live);
            }
        }
    }

    #[test]
    fn an_entry_that_stays_while_later_ones_come_and_go_keeps_memory_bounded() {
        let mut m = TokenMap::new();
        m.insert(0, ());
        for k in 1..10_000 {
            m.insert(k, ());
            if k > 1 {
                m.remove(k - 1);
            }
        }
        assert_eq!(m.len(), 2);
        assert!(m.slots.len() <= 18, "{} slots", m.slots.len());
    }
}
