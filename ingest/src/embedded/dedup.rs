//! The event ids the embedded store keeps in memory for dedup: the ids of its most recent
//! segments, bounded by a count independent of history size. Ids of older segments are found
//! by reading the `event_id` column of just the segments whose id range covers them (UUIDv7
//! ids sort by time), which then become resident in turn.

use std::collections::{HashSet, VecDeque};

use shoplens_contract::tables::RawTable;
use uuid::Uuid;

/// An event id as a number: UUIDs order as their hyphenated lowercase strings do.
pub(super) fn parse_id(id: &str) -> Option<u128> {
    Uuid::try_parse(id).ok().map(|u| u.as_u128())
}

/// The canonical string form of an id (as stored in the manifest's ranges).
pub(super) fn format_id(id: u128) -> String {
    Uuid::from_u128(id).hyphenated().to_string()
}

/// One segment whose ids are all in memory, sorted.
struct Resident {
    table: RawTable,
    file: String,
    ids: Vec<u128>,
}

impl Resident {
    fn covers(&self, id: u128) -> bool {
        self.ids.first().is_some_and(|lo| *lo <= id) && self.ids.last().is_some_and(|hi| id <= *hi)
    }
}

/// The resident ids, per table, of whole segments, evicting the least recently loaded
/// segments once more than `limit` ids are held (the newest segment always stays).
///
/// Each segment's ids are kept as one sorted list, and a look-up searches only the lists
/// whose range covers the id: new ids are above the table's largest (the caller checks that
/// first), so look-ups are for the few ids that arrive late or twice, while every applied
/// id is added. A hash set would make each addition and each eviction a random access into
/// a table of a million entries, and take three times the memory.
pub(super) struct IdIndex {
    limit: usize,
    resident: VecDeque<Resident>,
    files: HashSet<String>,
    total: usize,
}

impl IdIndex {
    pub(super) fn new(limit: usize) -> IdIndex {
        IdIndex {
            limit,
            resident: VecDeque::new(),
            files: HashSet::new(),
            total: 0,
        }
    }

    /// Whether every id of segment `file` is in memory.
    pub(super) fn is_resident(&self, file: &str) -> bool {
        self.files.contains(file)
    }

    pub(super) fn contains(&self, table: RawTable, id: u128) -> bool {
        self.resident
            .iter()
            .any(|r| r.table == table && r.covers(id) && r.ids.binary_search(&id).is_ok())
    }

    /// Makes the ids of segment `file` resident, then evicts old segments over the limit.
    pub(super) fn insert(&mut self, table: RawTable, file: String, mut ids: Vec<u128>) {
        if self.files.contains(&file) {
            return;
        }
        ids.sort_unstable();
        self.total += ids.len();
        self.files.insert(file.clone());
        self.resident.push_back(Resident { table, file, ids });
        while self.total > self.limit && self.resident.len() > 1 {
            if let Some(old) = self.resident.pop_front() {
                self.evict(old);
            }
        }
    }

    /// Forgets segment `file` (it was replaced by compaction).
    pub(super) fn remove(&mut self, file: &str) {
        if !self.files.contains(file) {
            return;
        }
        if let Some(i) = self.resident.iter().position(|r| r.file == file)
            && let Some(old) = self.resident.remove(i)
        {
            self.evict(old);
        }
    }

    fn evict(&mut self, old: Resident) {
        self.total -= old.ids.len();
        self.files.remove(&old.file);
    }

    /// Ids held in memory.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_their_strings_and_round_trip() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(sa < sb, parse_id(&sa) < parse_id(&sb));
        assert_eq!(format_id(parse_id(&sa).unwrap()), sa);
        assert_eq!(parse_id("not-a-uuid"), None);
    }

    #[test]
    fn the_index_stays_within_its_limit_keeping_whole_recent_segments() {
        let mut index = IdIndex::new(5);
        index.insert(RawTable::Orders, "a".into(), vec![1, 2, 3]);
        index.insert(RawTable::Orders, "b".into(), vec![4, 5]);
        assert!(index.contains(RawTable::Orders, 1));
        assert!(!index.contains(RawTable::Payments, 1));
        index.insert(RawTable::Payments, "c".into(), vec![1]);
        // 6 > 5: segment "a" goes.
        assert!(!index.is_resident("a"));
        assert!(!index.contains(RawTable::Orders, 1));
        assert!(index.contains(RawTable::Orders, 4));
        assert!(index.contains(RawTable::Payments, 1));
        assert_eq!(index.len(), 3);
        index.remove("b");
        assert!(!index.contains(RawTable::Orders, 4));
        assert_eq!(index.len(), 1);
        // A segment bigger than the limit still stays while it is the newest.
        index.insert(RawTable::Orders, "d".into(), (10..20).collect());
        assert!(index.is_resident("d"));
        assert!(!index.is_resident("c"));
        assert_eq!(index.len(), 10);
        // Ids come in any order; look-ups search within each segment's range.
        let mut index = IdIndex::new(100);
        index.insert(RawTable::Orders, "e".into(), vec![30, 25, 27, 40]);
        index.insert(RawTable::Orders, "f".into(), vec![28, 26]);
        for id in [25, 26, 27, 28, 30, 40] {
            assert!(index.contains(RawTable::Orders, id), "{id}");
        }
        for id in [24, 29, 31, 39, 41] {
            assert!(!index.contains(RawTable::Orders, id), "{id}");
        }
        assert!(!index.contains(RawTable::Payments, 25));
    }
}
