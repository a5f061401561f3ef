//! Lists are read a page at a time, newest first (SPEC §3): `limit` items after
//! an opaque cursor that names the last item of the previous page by its sort
//! key. Keys never change once written (placement time, notification time), and
//! the id breaks ties, so walking the pages meets every item exactly once while
//! new items arrive at the front.

use serde::{Deserialize, Serialize};

/// What a list returns unless asked for another size.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page; a larger `limit` gets this many.
pub const MAX_LIMIT: u32 = 200;

/// Where a page ends: the sort key of its last item. Compared as a row value
/// `(at, seq, id)`, so one index serves every page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub at: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: i64,
    pub id: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Cursor {
    /// Before every item: the first page.
    pub fn start() -> Self {
        Cursor {
            at: i64::MAX,
            seq: i64::MAX,
            id: String::new(),
        }
    }

    /// Opaque to clients: hex of the key's JSON, so it travels in a URL as is.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cursor serializes");
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `None` for anything [`Cursor::encode`] did not make.
    pub fn decode(raw: &str) -> Option<Self> {
        if !raw.len().is_multiple_of(2) || raw.len() > 2048 {
            return None;
        }
        let bytes = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(raw.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let c: Cursor = serde_json::from_slice(&bytes).ok()?;
        (c.id.len() <= 256 && !c.id.contains('\0')).then_some(c)
    }
}

/// One page request: at most `limit` items after `after`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Cursor,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: Cursor::start(),
        }
    }
}

impl PageRequest {
    /// The query's `LIMIT`: one more than the page, to learn whether another follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Cuts the rows fetched with [`PageRequest::fetch`] to the page; `key` gives
    /// each item's cursor, of which the last one's opens the next page.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next = if more { rows.last().map(key) } else { None };
        Page { items: rows, next }
    }
}

impl PageRequest {
    /// The page of read-model rows `(doc, sort key, id)` fetched with
    /// [`PageRequest::fetch`], each document parsed.
    pub fn docs(
        &self,
        rows: Vec<(String, i64, String)>,
    ) -> anyhow::Result<Page<serde_json::Value>> {
        self.page(rows, |(_, at, id)| Cursor {
            at: *at,
            seq: 0,
            id: id.clone(),
        })
        .try_map(|(doc, _, _)| serde_json::from_str(&doc))
        .map_err(Into::into)
    }
}

/// A page of a list and, when more items follow, where the next page starts.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            next: self.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_the_round_trip_and_nothing_else_decodes() {
        let c = Cursor {
            at: 1_764_000_000_000,
            seq: 3,
            id: "ord-1".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "zz", "7b7d", "abc", "6e756c6c", &"00".repeat(2000)] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_says_whether_another_follows() {
        let req = PageRequest {
            limit: 2,
            after: Cursor::start(),
        };
        let key = |n: &i64| Cursor {
            at: *n,
            seq: 0,
            id: n.to_string(),
        };
        let p = req.page(vec![9, 8, 7], key);
        assert_eq!(p.items, vec![9, 8]);
        assert_eq!(p.next.map(|c| c.at), Some(8));
        let p = req.page(vec![9, 8], key);
        assert_eq!((p.items.len(), p.next), (2, None));
    }
}
