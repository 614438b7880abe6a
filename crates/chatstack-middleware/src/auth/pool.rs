//! The pool of keys behind an [`AuthLayer`](super::AuthLayer): round-robin choice, and
//! revocation of keys the provider refused.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chatstack_proto::{Error, ErrorKind};
use http::{HeaderName, HeaderValue};

use super::key::{
    ApiKey, KeyCallback, KeyFingerprint, KeyIdentity, KeySource, SourceKind, callback_key,
    header_value,
};
use super::layer::AuthScheme;

/// Decides which errors take the key that met them out of rotation.
pub(crate) type RevokeIf = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// The keys of a layer, shared by the layer, its clones and every service it made.
pub(crate) struct KeyPool {
    scheme: AuthScheme,
    header: HeaderName,
    slots: Box<[Slot]>,
    /// The round-robin cursor: the slot of the next request, modulo the number of slots.
    next: AtomicUsize,
    revoke_if: RevokeIf,
}

struct Slot {
    kind: SlotKind,
    /// The digest of this slot's key that was taken out of rotation; 0 when none was.
    revoked: AtomicU64,
    /// Its fingerprint, for [`KeyPool::revoked`]: written only when a key is revoked or
    /// reinstated, so never contended on the request path.
    revoked_fingerprint: Mutex<Option<KeyFingerprint>>,
}

enum SlotKind {
    /// A fixed key and its header value, made once: a request clones the value (a reference
    /// count) and copies no key bytes.
    Key {
        key: ApiKey,
        value: HeaderValue,
    },
    Callback(KeyCallback),
}

/// Which key a request was sent with, so that its error can revoke it.
#[derive(Clone, Copy)]
pub(crate) struct KeyTicket {
    slot: usize,
    identity: KeyIdentity,
}

impl KeyPool {
    pub(crate) fn new(sources: &[KeySource], scheme: AuthScheme, revoke_if: RevokeIf) -> Self {
        let slots = sources
            .iter()
            .map(|source| Slot {
                kind: match &source.kind {
                    SourceKind::Key(key) => SlotKind::Key {
                        value: header_value(scheme.prefix(), key.expose()),
                        key: key.clone(),
                    },
                    SourceKind::Callback(callback) => SlotKind::Callback(Arc::clone(callback)),
                },
                revoked: AtomicU64::new(0),
                revoked_fingerprint: Mutex::new(None),
            })
            .collect();
        Self {
            scheme,
            header: scheme.header_name(),
            slots,
            next: AtomicUsize::new(0),
            revoke_if,
        }
    }

    pub(crate) fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    pub(crate) fn revoke_if(&self) -> &RevokeIf {
        &self.revoke_if
    }

    /// The header value of the next key in rotation, or the error that fails the request
    /// before it is sent: no key in rotation, or the error of a key callback.
    ///
    /// Round-robin: each request takes the slot after the previous one's; a slot whose key
    /// is out of rotation is skipped, and the cursor moves past it so that the keys left
    /// share the load evenly.
    pub(crate) fn choose(&self) -> Result<(HeaderValue, KeyTicket), Error> {
        let slots = self.slots.len();
        if slots == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "the AuthLayer has no key: its pool is empty; the request was not sent",
            ));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..slots {
            let index = start.wrapping_add(offset) % slots;
            let slot = &self.slots[index];
            let revoked = slot.revoked.load(Ordering::Acquire);
            let chosen = match &slot.kind {
                SlotKind::Key { key, value } => {
                    let identity = key.identity();
                    (identity.digest != revoked).then(|| (value.clone(), identity))
                }
                SlotKind::Callback(callback) => {
                    let secret = callback()?;
                    let (key, identity) = callback_key(&secret)?;
                    (identity.digest != revoked)
                        .then(|| (header_value(self.scheme.prefix(), key), identity))
                }
            };
            if let Some((value, identity)) = chosen {
                if offset > 0 {
                    self.next.fetch_add(offset, Ordering::Relaxed);
                }
                let ticket = KeyTicket {
                    slot: index,
                    identity,
                };
                return Ok((value, ticket));
            }
        }
        Err(Error::new(
            ErrorKind::Auth,
            format!(
                "no API key is in rotation: the provider refused {} (a 401 or \
                 insufficient_quota, by default); the request was not sent",
                if slots == 1 {
                    "the only key".to_owned()
                } else {
                    format!("all {slots} keys")
                }
            ),
        ))
    }

    /// Takes the ticket's key out of rotation if `error` says so (by default: a 401 or
    /// `insufficient_quota`).
    pub(crate) fn report(&self, ticket: KeyTicket, error: &Error) {
        if !(self.revoke_if)(error) {
            return;
        }
        let slot = &self.slots[ticket.slot];
        let fingerprint = ticket.identity.fingerprint;
        let previous = slot.revoked.swap(ticket.identity.digest, Ordering::AcqRel);
        if previous == ticket.identity.digest {
            return; // concurrent requests with the same key: announce it once
        }
        *slot
            .revoked_fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
        let in_rotation = self.in_rotation();
        tracing::warn!(
            key = %fingerprint,
            slot = ticket.slot,
            error.kind = ?error.kind(),
            error = %error,
            keys_in_rotation = in_rotation,
            "API key taken out of rotation"
        );
        if in_rotation == 0 {
            tracing::error!(
                keys = self.slots.len(),
                "no API key is left in rotation: requests fail without being sent until keys \
                 are reinstated"
            );
        }
    }

    /// How many slots may still serve a request: fixed keys not revoked, and every callback
    /// (whose next key may be a new one).
    fn in_rotation(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| match &slot.kind {
                SlotKind::Key { key, .. } => {
                    slot.revoked.load(Ordering::Acquire) != key.identity().digest
                }
                SlotKind::Callback(_) => true,
            })
            .count()
    }

    pub(crate) fn revoked(&self) -> Vec<KeyFingerprint> {
        self.slots
            .iter()
            .filter_map(|slot| {
                *slot
                    .revoked_fingerprint
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    pub(crate) fn reinstate_all(&self) {
        for slot in &self.slots {
            let mut fingerprint = slot
                .revoked_fingerprint
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            slot.revoked.store(0, Ordering::Release);
            *fingerprint = None;
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SlotKind::Key { key, .. } => fmt::Debug::fmt(key, f),
            SlotKind::Callback(_) => f.write_str("Callback"),
        }
    }
}

impl KeyPool {
    /// Adds the pool's fields to the `Debug` output of the layer or service that holds it.
    pub(crate) fn debug_fields(&self, debug: &mut fmt::DebugStruct<'_, '_>) {
        debug
            .field("scheme", &self.scheme)
            .field("keys", &self.slots)
            .field("revoked", &self.revoked());
    }
}
