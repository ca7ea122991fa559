//! Who may call `/api/v1`: a bearer token that is either the bootstrap admin token from config
//! (every permission) or an API key minted with `segments mint-key` (the permissions chosen
//! then). Keys are 256 random bits shown once; the store keeps only their SHA-256, which is
//! enough for tokens that carry that much entropy (no slow password hash is needed: nothing
//! can be guessed from a table of such hashes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shared::backends::sql::Database;

/// One permission, as written in keys and docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Permission {
    SegmentsCreate = 1,
    SegmentsRead = 2,
    SegmentsUpdate = 4,
    SegmentsDelete = 8,
    FlagsRead = 16,
    FlagsWrite = 32,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Self::SegmentsCreate,
        Self::SegmentsRead,
        Self::SegmentsUpdate,
        Self::SegmentsDelete,
        Self::FlagsRead,
        Self::FlagsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SegmentsCreate => "SEGMENTS_CREATE",
            Self::SegmentsRead => "SEGMENTS_READ",
            Self::SegmentsUpdate => "SEGMENTS_UPDATE",
            Self::SegmentsDelete => "SEGMENTS_DELETE",
            Self::FlagsRead => "FLAGS_READ",
            Self::FlagsWrite => "FLAGS_WRITE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn all() -> Self {
        Self(Permission::ALL.iter().fold(0, |bits, p| bits | *p as u32))
    }

    pub fn from_list(permissions: &[Permission]) -> Self {
        Self(permissions.iter().fold(0, |bits, p| bits | *p as u32))
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission as u32 != 0
    }

    /// Comma-separated names, as stored.
    pub fn to_csv(self) -> String {
        Permission::ALL.iter().filter(|p| self.contains(**p)).map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Reads the stored form; unknown names (from a newer version) are ignored.
    pub fn from_csv(text: &str) -> Self {
        Self::from_list(&text.split(',').filter_map(Permission::parse).collect::<Vec<_>>())
    }
}

/// The SHA-256 of a token, hex.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so response time says nothing about how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API key: a prefix that says what it is, then 256 random bits in hex.
pub fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cmsk_{hex}")
}

/// A minted key: its id (for logs and listings) and the token, which is shown once.
#[derive(Clone, Debug)]
pub struct MintedKey {
    pub id: String,
    pub token: String,
    pub permissions: Permissions,
}

/// Mints a key with `permissions` and stores its hash.
pub async fn mint_key(db: &Database, name: &str, permissions: Permissions) -> Result<MintedKey, sqlx::Error> {
    let id = crate::new_uuid();
    let token = new_api_key();
    crate::store::insert_api_key(db, &id, name, &hash_token(&token), &permissions.to_csv(), shared::now_millis())
        .await?;
    Ok(MintedKey { id, token, permissions })
}

/// Verified keys, kept for a short while so a busy client does not cost a query per request.
/// Keys cannot be edited, so a cached answer is never wrong, at most briefly late to see a
/// key removed from the store by hand.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, (Permissions, Instant)>>);

impl KeyCache {
    const TTL: Duration = Duration::from_secs(30);
    const CAPACITY: usize = 10_000;

    pub fn get(&self, hash: &str) -> Option<Permissions> {
        let map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(hash).filter(|(_, at)| at.elapsed() < Self::TTL).map(|(permissions, _)| *permissions)
    }

    pub fn insert(&self, hash: String, permissions: Permissions) {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(hash, (permissions, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip_through_their_stored_form() {
        let set = Permissions::from_list(&[Permission::SegmentsRead, Permission::FlagsWrite]);
        assert_eq!(set.to_csv(), "SEGMENTS_READ,FLAGS_WRITE");
        assert_eq!(Permissions::from_csv(&set.to_csv()), set);
        assert!(Permissions::all().contains(Permission::SegmentsDelete));
        assert!(!set.contains(Permission::SegmentsCreate));
    }

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"diff"));
    }
}
