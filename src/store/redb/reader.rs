//! Typed reads on one snapshot: lookups, the newest-first list and search.

use redb::{ReadTransaction, ReadableTableMetadata};

use super::tables::{
    ACCOUNT_PREFIX, BODIES, EVENTS, FLAG_DISPUTED, FLAG_REFUND_FULL, FLAG_REFUND_PARTIAL, ID_MAX,
    INDEX, NOTIFICATIONS, SESSIONS, decode, email_term, get_event, get_json, get_record,
    load_session, pi_term, split, state_range, word_term,
};
use crate::{
    domain::Session,
    model::{EventRecord, Notification, RefundStatus, SessionDetail, SessionRecord, State},
    store::{ListQuery, Page, StoreError},
};

/// A read snapshot with typed lookups.
pub struct Reader {
    r: ReadTransaction,
}

/// What a look at part of the event log found (`Reader::prunable_events`).
pub struct Prunable {
    /// Events received before the cutoff that still hold a body.
    pub old: Vec<String>,
    /// The last id looked at; `None` at the end of the log.
    pub next: Option<String>,
    /// When the oldest body kept was received.
    pub oldest_kept_ms: Option<u64>,
}

/// The most prefix matches a search looks at.
const SEARCH_CAP: usize = 1000;

impl Reader {
    pub(super) fn new(r: ReadTransaction) -> Self {
        Reader { r }
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        get_record(&self.r.open_table(SESSIONS)?, id)
    }

    /// The Checkout Session as last retrieved from Stripe, if ever.
    pub fn body(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        get_json(&self.r.open_table(BODIES)?, id)
    }

    pub fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Ok(get_event(&self.r.open_table(EVENTS)?, id)?.map(|(rec, _)| rec))
    }

    /// The exact body of an event as received (`None` once pruned).
    pub fn event_payload(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(get_event(&self.r.open_table(EVENTS)?, id)?
            .map(|(_, raw)| raw)
            .filter(|raw| !raw.is_empty()))
    }

    /// Up to `scan` events after `after`: the ids of those received before
    /// `before_ms` that still hold a body, the last id looked at (`None` at
    /// the end of the log), and when the oldest body kept was received.
    pub fn prunable_events(
        &self,
        before_ms: u64,
        after: Option<&str>,
        scan: usize,
    ) -> Result<Prunable, StoreError> {
        use std::ops::Bound;
        let table = self.r.open_table(EVENTS)?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut old = Vec::new();
        let (mut last, mut looked, mut oldest_kept) = (None, 0, None::<u64>);
        for entry in table.range::<&str>((lower, Bound::Unbounded))?.take(scan) {
            let (k, v) = entry?;
            let id = k.value();
            last = Some(id.to_string());
            looked += 1;
            let (rec, raw) = match split(id, v.value()) {
                Ok(parts) => parts,
                // Damaged: left alone, and the walk goes on past it.
                Err(e) => {
                    tracing::warn!(event = id, error = %e, "not pruning an event that cannot be read");
                    continue;
                }
            };
            if raw.is_empty() {
                continue;
            }
            match decode::<EventRecord>(id, rec) {
                Ok(rec) if rec.received_at_ms < before_ms => old.push(id.to_string()),
                Ok(rec) => {
                    oldest_kept =
                        Some(oldest_kept.map_or(rec.received_at_ms, |o| o.min(rec.received_at_ms)));
                }
                // Left as it is: the record is what a person would need to see.
                Err(e) => {
                    tracing::warn!(event = id, error = %e, "not pruning an event whose record cannot be read")
                }
            }
        }
        // Fewer than asked for: the end of the log.
        let next = if looked == scan { last } else { None };
        Ok(Prunable {
            old,
            next,
            oldest_kept_ms: oldest_kept,
        })
    }

    pub fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        get_json(&self.r.open_table(NOTIFICATIONS)?, id)
    }

    /// A session, record and detail (without the raw object: see `body`).
    pub fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        load_session(&self.r.open_table(SESSIONS)?, id)
    }

    /// Every outbox entry about a session: its fulfillments' callbacks, then
    /// its other notifications (emails, alerts, failed-payment callbacks).
    pub fn session_notifications(
        &self,
        detail: &SessionDetail,
    ) -> Result<Vec<Notification>, StoreError> {
        let table = self.r.open_table(NOTIFICATIONS)?;
        let ids = detail
            .fulfillments
            .iter()
            .map(|f| f.id.as_str())
            .chain(detail.notifications.iter().map(String::as_str));
        let mut out = Vec::new();
        for id in ids {
            if let Some(n) = get_json(&table, id)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Number of distinct events recorded.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self.r.open_table(EVENTS)?.len()?)
    }

    /// Number of sessions known.
    pub fn session_count(&self) -> Result<u64, StoreError> {
        Ok(self.r.open_table(SESSIONS)?.len()?)
    }

    /// Ids of every session in `state`.
    pub fn ids_in_state(&self, state: State) -> Result<Vec<String>, StoreError> {
        let table = self.r.open_table(INDEX)?;
        let mut out = Vec::new();
        for entry in table.range(state_range(state.as_str()))? {
            out.push(entry?.0.value().2.to_string());
        }
        Ok(out)
    }

    /// Distinct connected accounts, from the index: one range read per
    /// account (the next read starts past every entry of the last one).
    pub fn accounts(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let table = self.r.open_table(INDEX)?;
        let mut out: Vec<String> = Vec::new();
        let mut from = ACCOUNT_PREFIX.to_string();
        let mut skip = 0;
        while out.len() < limit {
            let Some(entry) = table.range((from.as_str(), skip, "")..)?.next() else {
                break;
            };
            let key = entry?.0;
            let (term, _, _) = key.value();
            let Some(account) = term.strip_prefix(ACCOUNT_PREFIX) else {
                break;
            };
            out.push(account.to_string());
            from = term.to_string();
            // Entries of a term are (term, 0, id): (term, 1, "") is past them all.
            skip = 1;
        }
        Ok(out)
    }

    /// Sessions newest first, filtered (state, refunds, disputes) and/or
    /// searched, after a cursor. Without a search this walks the index range
    /// of the most selective filter from the cursor: no full scan (a filter
    /// combined with another reads that range until a page is full).
    pub fn list(&self, query: &ListQuery) -> Result<Page<SessionRecord>, StoreError> {
        let limit = query.limit.max(1);
        let want = limit + 1;
        let sessions_table = self.r.open_table(SESSIONS)?;
        let mut sessions = Vec::with_capacity(want);
        let admit = |id: &str, out: &mut Vec<SessionRecord>| -> Result<(), StoreError> {
            if let Some(rec) = get_record(&sessions_table, id)?
                && query.admits(&rec)
            {
                out.push(rec);
            }
            Ok(())
        };
        match &query.q {
            Some(q) => {
                let mut found = self.search(q)?;
                found.sort_by(|a, b| b.cmp(a));
                let before = query.cursor.as_ref();
                for (_, id) in found.iter().filter(|k| before.is_none_or(|c| *k < c)) {
                    admit(id, &mut sessions)?;
                    if sessions.len() == want {
                        break;
                    }
                }
            }
            None => {
                let all: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
                let terms: Vec<&str> = match (query.disputed, query.refund_status, query.state) {
                    (true, _, _) => vec![FLAG_DISPUTED],
                    (_, Some(RefundStatus::Partial), _) => vec![FLAG_REFUND_PARTIAL],
                    (_, Some(RefundStatus::Full), _) => vec![FLAG_REFUND_FULL],
                    (_, _, Some(state)) => vec![state.as_str()],
                    _ => all,
                };
                let mut cursor = query.cursor.clone();
                'pages: loop {
                    let batch = self.newest(&terms, cursor.as_ref(), want)?;
                    let exhausted = batch.len() < want;
                    for (created, id) in batch {
                        admit(&id, &mut sessions)?;
                        if sessions.len() == want {
                            break 'pages;
                        }
                        cursor = Some((created, id));
                    }
                    if exhausted {
                        break;
                    }
                }
            }
        }
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next_cursor = if more {
            sessions.last().map(|s| format!("{}:{}", s.created, s.id))
        } else {
            None
        };
        Ok(Page {
            sessions,
            next_cursor,
        })
    }

    /// Up to `want` (created, id) of sessions in `states`, newest first, strictly
    /// before `before`: a merge of the per-state index ranges, so each page
    /// reads about `want` index entries whatever the table's size.
    fn newest(
        &self,
        states: &[&str],
        before: Option<&(i64, String)>,
        want: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        use std::ops::Bound;
        let table = self.r.open_table(INDEX)?;
        let mut ranges = Vec::with_capacity(states.len());
        for s in states.iter().copied() {
            let upper = match before {
                Some((c, id)) => Bound::Excluded((s, *c, id.as_str())),
                None => Bound::Included((s, i64::MAX, ID_MAX)),
            };
            let lower = Bound::Included((s, i64::MIN, ""));
            ranges.push(table.range::<(&str, i64, &str)>((lower, upper))?.rev());
        }
        let mut next = |i: usize| -> Result<Option<(i64, String)>, StoreError> {
            match ranges[i].next() {
                Some(entry) => {
                    let (k, _) = entry?;
                    let (_, created, id) = k.value();
                    Ok(Some((created, id.to_string())))
                }
                None => Ok(None),
            }
        };
        let mut heads = (0..states.len())
            .map(&mut next)
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let newest = heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
                .max_by(|a, b| a.1.cmp(b.1))
                .map(|(i, _)| i);
            let Some(i) = newest else { break };
            if let Some(head) = heads[i].take() {
                out.push(head);
            }
            heads[i] = next(i)?;
        }
        Ok(out)
    }

    /// (created, id) of sessions whose id, payment intent or email starts with `q`.
    fn search(&self, q: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let q = q.trim();
        let mut ids: Vec<String> = Vec::new();
        if q.starts_with("cs_") {
            let table = self.r.open_table(SESSIONS)?;
            for entry in table.range(q..)? {
                let (k, _) = entry?;
                if !k.value().starts_with(q) || ids.len() >= SEARCH_CAP {
                    break;
                }
                ids.push(k.value().to_string());
            }
        } else {
            let prefix = if q.starts_with("pi_") {
                pi_term(q)
            } else {
                email_term(q)
            };
            let table = self.r.open_table(INDEX)?;
            for entry in table.range((prefix.as_str(), i64::MIN, "")..)? {
                let k = entry?.0;
                let (term, _, id) = k.value();
                if !term.starts_with(prefix.as_str()) || ids.len() >= SEARCH_CAP {
                    break;
                }
                ids.push(id.to_string());
            }
            // A whole word of the name, email or items ("garcia").
            let word = word_term(&q.to_lowercase());
            for entry in table.range((word.as_str(), 0, "")..=(word.as_str(), 0, ID_MAX))? {
                if ids.len() >= SEARCH_CAP {
                    break;
                }
                let id = entry?.0.value().2.to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let table = self.r.open_table(SESSIONS)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rec) = get_record(&table, &id)? {
                out.push((rec.created, id));
            }
        }
        Ok(out)
    }
}
