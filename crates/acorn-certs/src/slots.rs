//! Two identity slots for certificate rotation: the **active** identity is always the one in
//! namespace `mqtt_certs` under the seed's keys (so today's images, ESP-IDF readers and
//! `acorn nvs get` see it); a **candidate** lives in namespace `mqtt_certs_next` until it is
//! committed or discarded.
//!
//! ## Commit, and what a power cut at any write leaves
//!
//! [`Slots::commit`] writes, in order:
//!
//! 1. `mqtt_certs_next/commit = 1` — the commit-in-progress marker;
//! 2. the active slot, as [`crate::CertStore::store`] orders it: `cert_valid = 0`, the
//!    certificate, the key, the endpoint, the metadata (the candidate's, byte for byte),
//!    `cert_valid = 1`;
//! 3. reads the active slot back and compares it with the candidate;
//! 4. erases the candidate (`cert_valid` first), then the marker.
//!
//! [`Slots::recover`], called at every boot before the identity is loaded, finishes what a
//! power cut interrupted: with the marker set and a complete candidate, the copy is done again
//! (it is idempotent); with the marker set and the candidate's `cert_valid` gone, only the
//! clean-up is left. Without the marker a complete candidate is still waiting for its trial
//! ([`Recovery::CandidatePending`]); an incomplete one is erased. So every boot loads a
//! complete identity: the old one, or the new one, never a certificate with a foreign key.

use alloc::vec;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::kv::{
    CertKv, KEY_CERT_META, KEY_CERT_VALID, KEY_DEVICE_CERT, KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY,
};
use crate::store::{CertStore, LoadedIdentity, StoreError};
use crate::types::DeviceCertificates;
use crate::ValidationReport;

/// NVS namespace of the candidate identity (15 characters, NVS's longest).
pub const CANDIDATE_NAMESPACE: &str = "mqtt_certs_next";
/// Key (in the candidate namespace) of the commit-in-progress marker (u8 1).
pub const KEY_COMMIT: &str = "commit";

/// The values a slot holds, in the order a store writes them (after `cert_valid = 0`).
const VALUE_KEYS: [&str; 4] = [
    KEY_DEVICE_CERT,
    KEY_PRIVATE_KEY,
    KEY_IOT_ENDPOINT,
    KEY_CERT_META,
];

/// Which identity slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Namespace `mqtt_certs`: the identity the device connects with.
    Active,
    /// Namespace `mqtt_certs_next`: a rotation's new identity until commit.
    Candidate,
}

/// A store holding both slots: gives a [`CertKv`] scoped to either namespace.
pub trait SlotKv {
    /// The store's error.
    type Error: core::fmt::Debug + core::fmt::Display;
    /// A slot's key-value view, borrowing the store.
    type Kv<'a>: CertKv<Error = Self::Error>
    where
        Self: 'a;

    /// The key-value view of `slot`.
    fn slot(&mut self, slot: Slot) -> Self::Kv<'_>;
}

/// A borrowed store holds the same slots.
impl<T: SlotKv + ?Sized> SlotKv for &mut T {
    type Error = T::Error;
    type Kv<'a>
        = T::Kv<'a>
    where
        Self: 'a;

    fn slot(&mut self, slot: Slot) -> Self::Kv<'_> {
        (**self).slot(slot)
    }
}

#[cfg(feature = "nvs")]
impl<F: embedded_storage::nor_flash::NorFlash> SlotKv for acorn_nvs::Nvs<F> {
    type Error = acorn_nvs::Error;
    type Kv<'a>
        = crate::nvs_kv::NvsCertKv<'a, F>
    where
        Self: 'a;

    fn slot(&mut self, slot: Slot) -> Self::Kv<'_> {
        match slot {
            Slot::Active => crate::nvs_kv::NvsCertKv::new(self),
            Slot::Candidate => crate::nvs_kv::NvsCertKv::in_namespace(self, CANDIDATE_NAMESPACE),
        }
    }
}

/// What [`Slots::recover`] found (and finished) at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No rotation under way.
    Clean,
    /// A complete candidate waits for its trial connection (commit or discard it).
    CandidatePending,
    /// A commit was interrupted and is now complete: the candidate is the active identity.
    CommitFinished,
    /// An incomplete candidate (a power cut while it was stored) was erased: the rotation
    /// starts over.
    PartialCandidateErased,
}

/// What a slot operation could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError<E: core::fmt::Debug + core::fmt::Display> {
    /// The store refused or failed (see the inner error; its text says which key).
    #[error(transparent)]
    Store(#[from] StoreError<E>),
    /// There is no complete candidate to commit or load.
    #[error("there is no complete candidate identity in namespace `mqtt_certs_next` (it was never stored, or a power cut interrupted storing it): start the rotation again")]
    NoCandidate,
    /// A commit is under way: only [`Slots::recover`] may finish it.
    #[error("a commit of the candidate identity is under way (namespace `mqtt_certs_next` holds `commit = 1`): reboot, or call recover(), to finish it")]
    CommitInProgress,
    /// The active slot does not read back as the candidate after the copy.
    #[error("after the copy, `mqtt_certs/{key}` differs from the candidate's: the flash may be failing; the candidate is kept and the copy is retried at the next boot")]
    VerifyFailed {
        /// The first key that differs.
        key: &'static str,
    },
}

/// The two identity slots of one store.
#[derive(Debug)]
pub struct Slots<S> {
    store: S,
    allow_custom_endpoint: bool,
}

type Result<T, E> = core::result::Result<T, SlotError<E>>;

impl<S: SlotKv> Slots<S> {
    /// The slots of `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            allow_custom_endpoint: false,
        }
    }

    /// Accepts any DNS host name as endpoint (local brokers) when `allow` is true.
    pub fn allow_custom_endpoint(mut self, allow: bool) -> Self {
        self.allow_custom_endpoint = allow;
        self
    }

    /// Gives the store back.
    pub fn into_inner(self) -> S {
        self.store
    }

    fn cert_store(&mut self, slot: Slot) -> CertStore<S::Kv<'_>> {
        CertStore::new(self.store.slot(slot)).allow_custom_endpoint(self.allow_custom_endpoint)
    }

    fn kv_err(operation: &'static str, key: &'static str, error: S::Error) -> SlotError<S::Error> {
        SlotError::Store(StoreError::Kv {
            operation,
            key,
            error,
        })
    }

    fn marker(&mut self) -> Result<bool, S::Error> {
        self.store
            .slot(Slot::Candidate)
            .read_u8(KEY_COMMIT)
            .map(|v| v == Some(1))
            .map_err(|e| Self::kv_err("read", KEY_COMMIT, e))
    }

    fn candidate_complete(&mut self) -> Result<bool, S::Error> {
        Ok(self.cert_store(Slot::Candidate).validity_flag()? == Some(true))
    }

    /// Loads and validates the active identity at `now` (Unix seconds).
    pub fn load_active(&mut self, now: u64) -> Result<LoadedIdentity, S::Error> {
        Ok(self.cert_store(Slot::Active).load(now)?)
    }

    /// Loads and validates the candidate identity at `now`, for the trial connection.
    pub fn load_candidate(&mut self, now: u64) -> Result<LoadedIdentity, S::Error> {
        if !self.candidate_complete()? {
            return Err(SlotError::NoCandidate);
        }
        Ok(self.cert_store(Slot::Candidate).load(now)?)
    }

    /// Validates `certs` at `now` and stores them as the candidate (replacing any candidate).
    /// The active identity is not touched.
    pub fn stage(
        &mut self,
        certs: &DeviceCertificates,
        now: u64,
    ) -> Result<ValidationReport, S::Error> {
        if self.marker()? {
            return Err(SlotError::CommitInProgress);
        }
        Ok(self.cert_store(Slot::Candidate).store(certs, now)?)
    }

    /// Whether a complete candidate is stored.
    pub fn has_candidate(&mut self) -> Result<bool, S::Error> {
        self.candidate_complete()
    }

    /// Makes the candidate the active identity (see the module docs for the write order).
    pub fn commit(&mut self) -> Result<(), S::Error> {
        if !self.candidate_complete()? {
            return Err(SlotError::NoCandidate);
        }
        self.store
            .slot(Slot::Candidate)
            .write_u8(KEY_COMMIT, 1)
            .map_err(|e| Self::kv_err("write", KEY_COMMIT, e))?;
        self.copy_verify_clean()
    }

    /// Erases the candidate (the active identity stays). Refused while a commit is under way.
    pub fn discard(&mut self) -> Result<(), S::Error> {
        if self.marker()? {
            return Err(SlotError::CommitInProgress);
        }
        self.cert_store(Slot::Candidate).erase()?;
        Ok(())
    }

    /// What every start does before it loads the identity: [`Slots::recover`], then a
    /// candidate whose trial never ended is dropped (the rotation starts again when it is
    /// triggered again). What was done, in a sentence for the log; `None` when nothing was.
    pub fn recover_at_start(&mut self) -> Result<Option<&'static str>, S::Error> {
        Ok(match self.recover()? {
            Recovery::Clean => None,
            Recovery::CommitFinished => Some(
                "a certificate rotation's commit was interrupted and is now finished: the new certificate is in use",
            ),
            Recovery::PartialCandidateErased => Some(
                "an unfinished certificate rotation left part of a new identity: erased (the old one is in use)",
            ),
            Recovery::CandidatePending => {
                self.discard()?;
                Some("a certificate rotation was interrupted before its trial ended: the new certificate was dropped, the old one is in use")
            }
        })
    }

    /// Finishes whatever a power cut interrupted (call at every boot, before loading the
    /// identity).
    pub fn recover(&mut self) -> Result<Recovery, S::Error> {
        let complete = self.candidate_complete()?;
        if self.marker()? {
            if complete {
                self.copy_verify_clean()?;
            } else {
                self.clean_candidate()?;
            }
            return Ok(Recovery::CommitFinished);
        }
        if complete {
            return Ok(Recovery::CandidatePending);
        }
        if self.candidate_has_anything()? {
            self.clean_candidate()?;
            return Ok(Recovery::PartialCandidateErased);
        }
        Ok(Recovery::Clean)
    }

    fn candidate_has_anything(&mut self) -> Result<bool, S::Error> {
        let mut kv = self.store.slot(Slot::Candidate);
        for key in VALUE_KEYS {
            if kv
                .stored_len(key)
                .map_err(|e| Self::kv_err("read", key, e))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(kv
            .read_u8(KEY_CERT_VALID)
            .map_err(|e| Self::kv_err("read", KEY_CERT_VALID, e))?
            .is_some())
    }

    /// Reads the candidate's values (the key stays in zeroizing buffers).
    fn candidate_values(&mut self) -> Result<Vec<Zeroizing<Vec<u8>>>, S::Error> {
        let mut kv = self.store.slot(Slot::Candidate);
        let mut values = Vec::with_capacity(VALUE_KEYS.len());
        for key in VALUE_KEYS {
            values.push(read_value(&mut kv, key).and_then(|v| {
                v.ok_or(SlotError::Store(StoreError::Missing {
                    key,
                    why: "is absent from the candidate",
                }))
            })?);
        }
        Ok(values)
    }

    fn copy_verify_clean(&mut self) -> Result<(), S::Error> {
        let values = self.candidate_values()?;
        {
            let mut active = self.store.slot(Slot::Active);
            active
                .write_u8(KEY_CERT_VALID, 0)
                .map_err(|e| Self::kv_err("write", KEY_CERT_VALID, e))?;
            for (key, value) in VALUE_KEYS.iter().zip(&values) {
                active
                    .write(key, value)
                    .map_err(|e| Self::kv_err("write", key, e))?;
            }
            active
                .write_u8(KEY_CERT_VALID, 1)
                .map_err(|e| Self::kv_err("write", KEY_CERT_VALID, e))?;
            for (key, value) in VALUE_KEYS.iter().zip(&values) {
                let back = read_value(&mut active, key)?;
                if back.as_deref().map(Vec::as_slice) != Some(value.as_slice()) {
                    return Err(SlotError::VerifyFailed { key });
                }
            }
        }
        self.clean_candidate()
    }

    /// Erases the candidate (`cert_valid` first), then the marker.
    fn clean_candidate(&mut self) -> Result<(), S::Error> {
        self.cert_store(Slot::Candidate).erase()?;
        self.store
            .slot(Slot::Candidate)
            .erase(KEY_COMMIT)
            .map_err(|e| Self::kv_err("erase", KEY_COMMIT, e))
    }
}

/// A value's bytes (an NVS string's without its NUL), in a zeroizing buffer.
fn read_value<K: CertKv>(
    kv: &mut K,
    key: &'static str,
) -> core::result::Result<Option<Zeroizing<Vec<u8>>>, SlotError<K::Error>> {
    let err = |error| {
        SlotError::Store(StoreError::Kv {
            operation: "read",
            key,
            error,
        })
    };
    let Some(len) = kv.stored_len(key).map_err(err)? else {
        return Ok(None);
    };
    let mut buf = Zeroizing::new(vec![0u8; len]);
    match kv.read(key, &mut buf).map_err(err)? {
        Some(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        None => Ok(None),
    }
}
