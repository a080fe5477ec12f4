//! The durable registry: names for durable servers (name → tenant), kept
//! in the store so every process resolves the same name the same way.
//!
//! Entries live under the reserved tenant [`REGISTRY_TENANT`]
//! (`chorus.durable.registry` NUL `r/<name>`), which no server may use.

use bytes::{BufMut, Bytes, BytesMut};
use chorus_backend::{KvBackend, TxnRequest};

use crate::error::Error;
use crate::format::{check_name, decode, encode, wrong, Record, Registration};
use crate::ops;

/// The reserved tenant holding the registry.
pub const REGISTRY_TENANT: &str = "chorus.durable.registry";

/// A handle on the registry in a store.
#[derive(Clone, Debug)]
pub struct Registry<B> {
    backend: B,
}

impl<B: KvBackend> Registry<B> {
    pub fn new(backend: B) -> Registry<B> {
        Registry { backend }
    }

    fn prefix() -> Bytes {
        let mut prefix = BytesMut::new();
        prefix.put_slice(REGISTRY_TENANT.as_bytes());
        prefix.put_slice(b"\0r/");
        prefix.freeze()
    }

    /// The registry key of `name`.
    pub(crate) fn key(name: &str) -> Bytes {
        let mut key = BytesMut::from(&Self::prefix()[..]);
        key.put_slice(name.as_bytes());
        key.freeze()
    }

    /// Registers `name` for `tenant`; idempotent for the same tenant,
    /// [`Error::NameTaken`] for another.
    pub async fn register(&self, name: &str, tenant: &str, server_type: &str) -> Result<(), Error> {
        check_name(name)?;
        check_name(tenant)?;
        if tenant == REGISTRY_TENANT {
            return Err(Error::InvalidName {
                name: tenant.to_string(),
                reason: "reserved for the registry",
            });
        }
        let key = Self::key(name);
        let value = encode(&Record::Registration(Registration {
            tenant: tenant.to_string(),
            server_type: server_type.to_string(),
        }))?;
        let request = TxnRequest {
            compare: vec![ops::absent(key.clone())],
            success: vec![ops::put(key.clone(), value)],
            failure: vec![ops::get(key.clone())],
        };
        let backend = self.backend.clone();
        let response = ops::retrying(|| backend.txn(request.clone())).await?;
        if response.succeeded {
            return Ok(());
        }
        match ops::range_one(&response, 0)? {
            Some(kv) => match decode(&kv.key, &kv.value)? {
                Record::Registration(found) if found.tenant == tenant => Ok(()),
                Record::Registration(found) => Err(Error::NameTaken {
                    name: name.to_string(),
                    tenant: found.tenant,
                }),
                other => Err(wrong(&kv.key, "registration", &other)),
            },
            // Deleted between our compare and read: try once more.
            None => Box::pin(self.register(name, tenant, server_type)).await,
        }
    }

    /// The registration of `name`, if any (dgen's `whereis`).
    pub async fn lookup(&self, name: &str) -> Result<Option<Registration>, Error> {
        let key = Self::key(name);
        let backend = self.backend.clone();
        match ops::retrying(|| backend.get(key.clone())).await? {
            None => Ok(None),
            Some(kv) => match decode(&kv.key, &kv.value)? {
                Record::Registration(found) => Ok(Some(found)),
                other => Err(wrong(&kv.key, "registration", &other)),
            },
        }
    }

    /// Removes `name`; whether it existed.
    pub async fn unregister(&self, name: &str) -> Result<bool, Error> {
        let key = Self::key(name);
        let backend = self.backend.clone();
        let deleted = ops::retrying(|| {
            backend.delete_range(chorus_backend::DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            })
        })
        .await?;
        Ok(deleted.deleted > 0)
    }

    /// Every `(name, registration)`, by name.
    pub async fn list(&self) -> Result<Vec<(String, Registration)>, Error> {
        let prefix = Self::prefix();
        let backend = self.backend.clone();
        let found = ops::retrying(|| backend.get_prefix(prefix.clone())).await?;
        found
            .kvs
            .iter()
            .map(|kv| {
                let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                match decode(&kv.key, &kv.value)? {
                    Record::Registration(found) => Ok((name, found)),
                    other => Err(wrong(&kv.key, "registration", &other)),
                }
            })
            .collect()
    }
}
