//! The machine the simulator replicates: a register map with put and
//! compare-and-swap, plus a digest chained over every applied command so the
//! state-machine-safety checker can compare replicas cheaply.

use std::collections::BTreeMap;

use chorus_raft::{ApplyMeta, Effects, Machine, RestoreError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put {
        key: u64,
        value: u64,
    },
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvReply {
    Ok,
    Swapped(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvQuery {
    pub key: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimKv {
    data: BTreeMap<u64, u64>,
    /// FNV-style chain over (index, command) of everything applied.
    digest: u64,
    /// Ask for a snapshot every this many commands (0: never). Part of the
    /// replicated state so every replica decides alike.
    release_every: u64,
    commands: u64,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Fold bytes into an FNV-1a hash.
pub fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl SimKv {
    pub fn new(release_every: u64) -> Self {
        SimKv {
            release_every,
            digest: 0xcbf2_9ce4_8422_2325,
            ..SimKv::default()
        }
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl Machine for SimKv {
    type Command = KvCommand;
    type Reply = KvReply;
    type Query = KvQuery;
    type QueryReply = Option<u64>;
    type Message = ();

    fn apply(
        &mut self,
        meta: &ApplyMeta,
        command: KvCommand,
        effects: &mut Effects<Self>,
    ) -> KvReply {
        let encoded = postcard::to_allocvec(&command).unwrap_or_default();
        self.digest = fnv(fnv(self.digest, &meta.index.to_le_bytes()), &encoded);
        self.commands += 1;
        if self.release_every > 0 && self.commands % self.release_every == 0 {
            effects.release_cursor();
        }
        match command {
            KvCommand::Put { key, value } => {
                self.data.insert(key, value);
                KvReply::Ok
            }
            KvCommand::Cas { key, expected, new } => {
                let swapped = self.data.get(&key).copied() == expected;
                if swapped {
                    self.data.insert(key, new);
                }
                KvReply::Swapped(swapped)
            }
        }
    }

    fn query(&self, query: &KvQuery) -> Option<u64> {
        self.data.get(&query.key).copied()
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        postcard::from_bytes(data).map_err(|e| RestoreError {
            reason: e.to_string(),
        })
    }
}
