//! The senders this node has seen the append function accept, per room, so that their next
//! messages skip the function's membership read (see `lua/append.lua`).
//!
//! A room's two members never change and a room id is never reused, so a remembered pair stays
//! true for as long as the room lives, and after it the function finds no history stream and
//! checks the room again. Forgetting is therefore always safe: the memory is bounded by
//! clearing it whole when full, and the next message of each active room learns it again.

use std::collections::HashMap;
use std::sync::RwLock;

use chat_core::{Phone, RoomId};

/// Rooms remembered at most; about 150 bytes each with both members.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub(crate) struct KnownMembers {
    /// Per room, the members seen accepted (one or both).
    rooms: RwLock<HashMap<RoomId, Vec<Phone>>>,
}

impl KnownMembers {
    /// Whether the function accepted `sender` in `room` before.
    pub(crate) fn knows(&self, room: &RoomId, sender: &Phone) -> bool {
        // A poisoned lock only means a panic elsewhere mid-insert; the set is still a set.
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).is_some_and(|m| m.contains(sender))
    }

    /// Remembers that the function accepted `sender` in `room`.
    pub(crate) fn learn(&self, room: RoomId, sender: &Phone) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if rooms.len() >= CAPACITY && !rooms.contains_key(&room) {
            rooms.clear();
        }
        let members = rooms.entry(room).or_default();
        if !members.contains(sender) {
            members.push(sender.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Phone {
        Phone::parse(s).unwrap()
    }

    #[test]
    fn a_pair_is_known_once_learned_and_only_that_pair() {
        let known = KnownMembers::default();
        let room = RoomId(uuid::Uuid::new_v4());
        let other = RoomId(uuid::Uuid::new_v4());
        assert!(!known.knows(&room, &phone("+15550000001")));
        known.learn(room, &phone("+15550000001"));
        assert!(known.knows(&room, &phone("+15550000001")));
        assert!(!known.knows(&room, &phone("+15550000002")));
        assert!(!known.knows(&other, &phone("+15550000001")));
    }

    #[test]
    fn a_full_memory_starts_over_rather_than_grow() {
        let known = KnownMembers::default();
        let first = RoomId(uuid::Uuid::new_v4());
        known.learn(first, &phone("+15550000001"));
        for _ in 1..CAPACITY {
            known.learn(RoomId(uuid::Uuid::new_v4()), &phone("+15550000001"));
        }
        assert!(known.knows(&first, &phone("+15550000001")));
        let last = RoomId(uuid::Uuid::new_v4());
        known.learn(last, &phone("+15550000001"));
        assert!(!known.knows(&first, &phone("+15550000001")));
        assert!(known.knows(&last, &phone("+15550000001")));
        assert_eq!(known.rooms.read().unwrap().len(), 1);
    }
}
