//! The keys of a referenced column, held as 128-bit hashes in an open-addressed table.

/// The keys of a referenced column: the xxh3-128 of each key's text (the chance of a false
/// match is that of `key_hash`), 16 bytes a key instead of a string each. The hashes lie in one
/// open-addressed table probed linearly from their low bits, so a lookup reads one cache line
/// (four slots), where a set of strings missed the cache on every key it compared (8 % of the
/// orders ingest) and a hashbrown set of the hashes read its control bytes, then its slot: two
/// misses in a table of a million keys.
pub struct KeySet {
    /// A power of two of slots (or none), at most five eighths full; 0 marks an empty slot.
    slots: Vec<u128>,
    len: usize,
    /// Whether the key whose hash is 0, which no slot can hold, is in the set.
    has_zero: bool,
    /// Tells sets apart in the per-thread memo of `contains` (an address could be reused).
    id: u64,
}

/// The count, not the table (millions of slots).
impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("keys", &(self.len + usize::from(self.has_zero))).finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KeySet {
            slots: Vec::new(),
            len: 0,
            has_zero: false,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl KeySet {
    pub fn insert(&mut self, key_text: &str) {
        self.insert_hash(xxhash_rust::xxh3::xxh3_128(key_text.as_bytes()));
    }

    fn insert_hash(&mut self, hash: u128) {
        if hash == 0 {
            self.has_zero = true;
            return;
        }
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            let capacity = (self.slots.len() * 2).max(1024);
            let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
            for hash in old.into_iter().filter(|h| *h != 0) {
                place(&mut self.slots, hash);
            }
        }
        if place(&mut self.slots, hash) {
            self.len += 1;
        }
    }

    fn contains_hash(&self, hash: u128) -> bool {
        if hash == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                h if h == hash => return true,
                0 => return false,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Whether the key is in the set. The last key found on this thread is remembered: an
    /// extract lists an order's lines together, all naming one customer, and a lookup in a set of
    /// millions of keys misses the cache (at 1M customers 10 % of the orders ingest).
    pub fn contains(&self, key_text: &str) -> bool {
        thread_local! {
            static LAST_FOUND: std::cell::Cell<(u64, u128)> = const { std::cell::Cell::new((0, 0)) };
        }
        let hash = xxhash_rust::xxh3::xxh3_128(key_text.as_bytes());
        if LAST_FOUND.get() == (self.id, hash) {
            return true;
        }
        let found = self.contains_hash(hash);
        if found {
            LAST_FOUND.set((self.id, hash));
        }
        found
    }
}

/// Put a non-zero `hash` into the first free slot from its own; false if it is there already.
fn place(slots: &mut [u128], hash: u128) -> bool {
    let mask = slots.len() - 1;
    let mut slot = hash as usize & mask;
    loop {
        match slots[slot] {
            h if h == hash => return false,
            0 => {
                slots[slot] = hash;
                return true;
            }
            _ => slot = (slot + 1) & mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_remembered_as_found_in_one_set_is_not_found_in_another() {
        let (mut customers, mut suppliers) = (KeySet::default(), KeySet::default());
        customers.insert("C1");
        suppliers.insert("S1");
        for _ in 0..2 {
            assert!(customers.contains("C1"));
            assert!(!suppliers.contains("C1"));
            assert!(!customers.contains("S1"));
            assert!(suppliers.contains("S1"));
        }
    }

    #[test]
    fn the_key_table_finds_what_was_inserted_through_collisions_and_growth() {
        let mut keys = KeySet::default();
        // Hashes sharing their low bits probe past each other; 0 has no slot of its own.
        let colliding: Vec<u128> = (1..=40u128).map(|i| i << 64).collect();
        for &h in colliding.iter().chain(&[0]) {
            keys.insert_hash(h);
        }
        let spread: Vec<u128> =
            (1..=5_000u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        for &h in spread.iter().chain(&colliding) {
            keys.insert_hash(h);
        }
        assert_eq!(keys.len, colliding.len() + spread.len(), "repeated inserts keep one slot");
        assert!(keys.slots.len().is_power_of_two() && keys.len * 8 <= keys.slots.len() * 5);
        assert!(colliding.iter().chain(&spread).chain(&[0]).all(|h| keys.contains_hash(*h)));
        assert!(!keys.contains_hash(41 << 64) && !keys.contains_hash(7));
        assert!(!KeySet::default().contains_hash(0) && !KeySet::default().contains_hash(5));
    }
}
