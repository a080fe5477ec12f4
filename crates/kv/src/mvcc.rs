//! The multi-version keyspace: every change of every key since the last
//! compaction, indexed by key (for reads at any revision) and by revision
//! (for watch catch-up and compaction).
//!
//! etcd's model: a global revision, starting at 1 for an empty store, grows
//! by one per write transaction; the changes of one transaction share the
//! main revision and are ordered by a sub revision. Reads at revision `r`
//! see, for each key, its newest version at a main revision `<= r`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::{
    Event, EventBatch, EventKind, KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget,
};
use crate::error::KvError;
use crate::range::KeyRange;

/// A change's place in history: the write transaction (`main`) and the
/// change's position inside it (`sub`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Revision {
    pub(crate) main: i64,
    pub(crate) sub: i64,
}

impl Revision {
    fn first_of(main: i64) -> Self {
        Revision { main, sub: 0 }
    }
}

/// One change of one key: a put (`live`) or a delete (`None`, a tombstone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Version {
    pub(crate) revision: Revision,
    pub(crate) live: Option<Live>,
}

/// A key's state after a put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Live {
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) value: Bytes,
    pub(crate) lease: i64,
}

impl Live {
    pub(crate) fn to_kv(&self, key: &Bytes, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// The newest live version of `versions` at main revision `<= revision`.
fn live_at(versions: &[Version], revision: i64) -> Option<(&Version, &Live)> {
    let after = versions.partition_point(|v| v.revision.main <= revision);
    let version = &versions[after.checked_sub(1)?];
    version.live.as_ref().map(|live| (version, live))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Store {
    /// Every key with history, its versions oldest first. Invariants: never
    /// an empty list; revisions strictly increase; at most one version is
    /// below `compacted`, it is the first and it is live (the key's value
    /// when history starts, kept so reads at `compacted` and the first
    /// event's `prev_kv` stay exact).
    keys: BTreeMap<Bytes, Vec<Version>>,
    /// The key of every version at main revision `>= compacted`.
    changes: BTreeMap<Revision, Bytes>,
    /// The newest revision; 1 for an empty store (as etcd).
    revision: i64,
    /// Reads and events below this revision are gone. `compacted <= revision`.
    compacted: i64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            keys: BTreeMap::new(),
            changes: BTreeMap::new(),
            revision: 1,
            compacted: 0,
        }
    }
}

impl Store {
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    pub(crate) fn compacted(&self) -> i64 {
        self.compacted
    }

    pub(crate) fn keys(&self) -> &BTreeMap<Bytes, Vec<Version>> {
        &self.keys
    }

    /// The revision a read asking for `requested` happens at (etcd's
    /// order of checks: future first, then "newest", then compacted).
    pub(crate) fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        let revision = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if revision < self.compacted {
            return Err(KvError::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(revision)
    }

    /// The live keys of `range` at `revision`, in key order.
    pub(crate) fn scan<'a>(
        &'a self,
        range: &'a KeyRange,
        revision: i64,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Version, &'a Live)> + 'a {
        range
            .bounds()
            .into_iter()
            .flat_map(move |(start, end)| self.keys.range::<[u8], _>((Bound::Included(start), end)))
            .filter_map(move |(key, versions)| {
                live_at(versions, revision).map(|(version, live)| (key, version, live))
            })
    }

    /// The key's value at `revision`.
    pub(crate) fn get(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        let (key, versions) = self.keys.get_key_value(key)?;
        live_at(versions, revision).map(|(version, live)| live.to_kv(key, version.revision.main))
    }

    /// Answer a range read at `revision` (already checked with
    /// [`Store::read_revision`]), as etcd's `applierV3backend.Range` does.
    /// The header is the caller's to fill.
    pub(crate) fn range(&self, request: &RangeRequest, revision: i64) -> RangeResponse {
        let range = KeyRange::new(request.key.clone(), request.range_end.clone());
        let live = self.scan(&range, revision);
        if request.count_only {
            return RangeResponse {
                count: count_i64(live.count()),
                ..RangeResponse::default()
            };
        }
        let limit = usize::try_from(request.limit).unwrap_or(0);
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        // etcd: a target other than the key sorts ascending by default; an
        // ascending sort by key is the scan order already.
        let order = match (request.sort_order, request.sort_target) {
            (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => None,
            (SortOrder::None, _) => Some(SortOrder::Ascend),
            (order, _) => Some(order),
        };
        let mut count = 0;
        let mut kvs = Vec::new();
        for (key, version, live) in live {
            count += 1;
            // Without sorting or filtering only the first limit + 1 are
            // needed (the extra one says "more").
            if order.is_some() || filtered || limit == 0 || kvs.len() <= limit {
                kvs.push(live.to_kv(key, version.revision.main));
            }
        }
        if filtered {
            kvs.retain(|kv| {
                let keep = |bound: i64, ok: bool| bound == 0 || ok;
                keep(
                    request.min_mod_revision,
                    kv.mod_revision >= request.min_mod_revision,
                ) && keep(
                    request.max_mod_revision,
                    kv.mod_revision <= request.max_mod_revision,
                ) && keep(
                    request.min_create_revision,
                    kv.create_revision >= request.min_create_revision,
                ) && keep(
                    request.max_create_revision,
                    kv.create_revision <= request.max_create_revision,
                )
            });
        }
        if let Some(order) = order {
            sort(&mut kvs, request.sort_target, order);
        }
        let more = limit > 0 && kvs.len() > limit;
        if more {
            kvs.truncate(limit);
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse {
            kvs,
            more,
            count: count_i64(count),
            ..RangeResponse::default()
        }
    }

    /// Start a write transaction at the next revision.
    pub(crate) fn write(&mut self) -> Write<'_> {
        let main = self.revision + 1;
        Write {
            store: self,
            main,
            sub: 0,
        }
    }

    /// Drop the history below `at` (checked by the caller:
    /// `compacted < at <= revision`). Only keys changed below `at` are
    /// visited.
    pub(crate) fn compact(&mut self, at: i64) {
        assert!(
            self.compacted < at && at <= self.revision,
            "compaction to {at} outside ({}, {}]",
            self.compacted,
            self.revision
        );
        let kept = self.changes.split_off(&Revision::first_of(at));
        let dropped = std::mem::replace(&mut self.changes, kept);
        let touched: BTreeSet<Bytes> = dropped.into_values().collect();
        for key in touched {
            let Some(versions) = self.keys.get_mut(&key) else {
                continue;
            };
            let below = versions.partition_point(|v| v.revision.main < at);
            // Keep the newest version below `at` if it is live: it is the
            // key's value at `at` unless a newer version replaces it.
            let keep_from = match below.checked_sub(1) {
                Some(newest_below) if versions[newest_below].live.is_some() => newest_below,
                _ => below,
            };
            versions.drain(..keep_from);
            if versions.is_empty() {
                self.keys.remove(&key);
            }
        }
        self.compacted = at;
    }

    /// The changes of `range` at revisions `>= from`, whole revisions at a
    /// time, stopping after the revision in which `events_max` is reached.
    pub(crate) fn events(
        &self,
        from: i64,
        range: &KeyRange,
        events_max: usize,
    ) -> Result<EventBatch, KvError> {
        // Revision 1 is the empty store: nothing happened before it.
        let from = from.max(1);
        if from < self.compacted {
            return Err(KvError::Compacted {
                compact_revision: self.compacted,
            });
        }
        let events_max = events_max.max(1);
        let mut events: Vec<Event> = Vec::new();
        let mut next_revision = self.revision + 1;
        for (revision, key) in self.changes.range(Revision::first_of(from)..) {
            if events.len() >= events_max
                && events.last().map(|e| e.kv.mod_revision) != Some(revision.main)
            {
                next_revision = revision.main;
                break;
            }
            if range.contains(key) {
                events.push(self.event(*revision, key));
            }
        }
        Ok(EventBatch {
            events,
            next_revision: next_revision.max(from),
        })
    }

    fn event(&self, revision: Revision, key: &Bytes) -> Event {
        let versions = self
            .keys
            .get(key)
            .expect("every change is in its key's history");
        let position = versions
            .binary_search_by_key(&revision, |v| v.revision)
            .expect("every change is in its key's history");
        let version = &versions[position];
        let (kind, kv) = match &version.live {
            Some(live) => (EventKind::Put, live.to_kv(key, revision.main)),
            None => (
                EventKind::Delete,
                KeyValue {
                    key: key.clone(),
                    mod_revision: revision.main,
                    ..KeyValue::default()
                },
            ),
        };
        let prev_kv = position.checked_sub(1).and_then(|previous| {
            let previous = &versions[previous];
            previous
                .live
                .as_ref()
                .map(|live| live.to_kv(key, previous.revision.main))
        });
        Event { kind, kv, prev_kv }
    }

    /// Rebuild a store from a snapshot's parts, checking every invariant
    /// the code relies on (the parts come from disk or the network).
    pub(crate) fn from_parts(
        keys: BTreeMap<Bytes, Vec<Version>>,
        revision: i64,
        compacted: i64,
    ) -> Result<Store, String> {
        // `revision < i64::MAX`: the next write's revision must exist.
        if revision < 1 || revision == i64::MAX || compacted < 0 || compacted > revision {
            return Err(format!(
                "revision {revision} and compacted revision {compacted} are inconsistent"
            ));
        }
        let mut changes = BTreeMap::new();
        for (key, versions) in &keys {
            if key.is_empty() || versions.is_empty() {
                return Err("an empty key or a key without versions".into());
            }
            for (position, version) in versions.iter().enumerate() {
                let Revision { main, sub } = version.revision;
                if main < 1 || main > revision || sub < 0 {
                    return Err(format!("revision {main}.{sub} out of range"));
                }
                if position > 0 && versions[position - 1].revision >= version.revision {
                    return Err("a key's versions are out of order".into());
                }
                if let Some(live) = &version.live {
                    // Each put of a key takes a revision of its own, so its
                    // version never exceeds its revision.
                    if live.version < 1
                        || live.version > main
                        || live.create_revision < 1
                        || live.create_revision > main
                    {
                        return Err(format!("bad version metadata at revision {main}"));
                    }
                }
                if main < compacted {
                    if position > 0 || version.live.is_none() {
                        return Err("history below the compacted revision".into());
                    }
                } else if changes.insert(version.revision, key.clone()).is_some() {
                    return Err(format!("two changes at revision {main}.{sub}"));
                }
            }
        }
        Ok(Store {
            keys,
            changes,
            revision,
            compacted,
        })
    }
}

fn count_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    // Stable, so equal targets keep key order (etcd leaves it unspecified).
    let compare = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
        _ => kvs.sort_by(compare),
    }
}

/// One write transaction: every change gets the same main revision and
/// the next sub revision; the store's revision moves only if something
/// changed (a txn that writes nothing does not bump it, as in etcd).
pub(crate) struct Write<'a> {
    store: &'a mut Store,
    main: i64,
    sub: i64,
}

impl Write<'_> {
    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    /// The revision reads inside the transaction see: its own changes
    /// once it has made some.
    pub(crate) fn read_revision(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }

    fn next_revision(&mut self) -> Revision {
        let revision = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        revision
    }

    /// Put a key; returns its previous value.
    pub(crate) fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let revision = self.next_revision();
        let versions = self.store.keys.entry(key.clone()).or_default();
        let previous = versions
            .last()
            .and_then(|v| v.live.as_ref().map(|live| (v.revision.main, live)));
        let (create_revision, version) = match previous {
            Some((_, live)) => (live.create_revision, live.version + 1),
            None => (revision.main, 1),
        };
        let prev_kv = previous.map(|(main, live)| live.to_kv(&key, main));
        versions.push(Version {
            revision,
            live: Some(Live {
                create_revision,
                version,
                value,
                lease,
            }),
        });
        self.store.changes.insert(revision, key);
        prev_kv
    }

    /// Delete a key if it exists; returns what it held.
    pub(crate) fn delete(&mut self, key: &Bytes) -> Option<KeyValue> {
        let versions = self.store.keys.get(key)?;
        let last = versions.last()?;
        let prev_kv = last.live.as_ref()?.to_kv(key, last.revision.main);
        let revision = self.next_revision();
        if let Some(versions) = self.store.keys.get_mut(key) {
            versions.push(Version {
                revision,
                live: None,
            });
        }
        self.store.changes.insert(revision, key.clone());
        Some(prev_kv)
    }

    /// End the transaction; returns the store's revision after it.
    pub(crate) fn finish(self) -> i64 {
        if self.sub > 0 {
            self.store.revision = self.main;
        }
        self.store.revision
    }
}
