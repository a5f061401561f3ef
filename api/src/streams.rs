//! Caps on open event streams: so many per user and so many in all, each
//! counted from the moment it opens until the client goes (or the stream ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct StreamSlots {
    per_user: usize,
    total: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open stream; dropping it frees the slot.
pub struct Slot {
    slots: Arc<StreamSlots>,
    user: String,
}

impl StreamSlots {
    pub fn new(per_user: usize, total: usize) -> Arc<Self> {
        Arc::new(StreamSlots {
            per_user: per_user.max(1),
            total: total.max(1),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for one more stream of `user`, or how long to wait before asking again.
    pub fn open(self: &Arc<Self>, user: &str) -> Result<Slot, Duration> {
        let mut open = self.open.lock().unwrap();
        let mine = open.1.get(user).copied().unwrap_or(0);
        if mine >= self.per_user || open.0 >= self.total {
            return Err(Duration::from_secs(5));
        }
        open.0 += 1;
        open.1.insert(user.to_string(), mine + 1);
        Ok(Slot {
            slots: self.clone(),
            user: user.to_string(),
        })
    }

    /// Streams open now (all users).
    pub fn count(&self) -> usize {
        self.open.lock().unwrap().0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_in_all_and_a_closed_stream_frees_its_slot() {
        let s = StreamSlots::new(2, 3);
        let a1 = s.open("a").unwrap();
        let _a2 = s.open("a").unwrap();
        assert!(s.open("a").is_err(), "a third for one user");
        let _b1 = s.open("b").unwrap();
        assert!(s.open("c").is_err(), "a fourth in all");
        drop(a1);
        assert_eq!(s.count(), 2);
        let _c1 = s.open("c").unwrap();
        assert_eq!(s.count(), 3);
    }
}
