//! Who may call the segments routes (`/api/v1` and, unless opened by config, the legacy ones):
//! a bearer token that is either the bootstrap admin token from config (every permission) or
//! an API key minted with `segments mint-key` (the permissions chosen then) and not revoked
//! since. Keys are 256 random bits shown once; the store keeps only their SHA-256, which is
//! enough for tokens that carry that much entropy (no slow password hash is needed: nothing
//! can be guessed from a table of such hashes).
//!
//! History links are signed instead: HMAC-SHA256 under a server secret kept in the store, over
//! the user, the range and an expiry, so the link works for whoever was given it, briefly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use shared::backends::sql::Database;

use crate::Segments;

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

/// Revokes the key with id `key` (as `mint-key` printed it) or the key itself; whether a key
/// was revoked (false: unknown, or revoked already).
pub async fn revoke_key(db: &Database, key: &str) -> Result<bool, sqlx::Error> {
    let key = key.trim();
    Ok(crate::store::revoke_api_key(db, key, &hash_token(key), shared::now_millis()).await? > 0)
}

/// Verified keys, kept for a moment so a busy client does not cost a query per request. Keys
/// cannot be edited, only revoked; every replica reads the store again once an entry is
/// [`KeyCache::TTL`] old, so a revoked key stops working everywhere within that time.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, (Permissions, Instant)>>);

impl KeyCache {
    /// Half the one second a revocation may take to reach every replica.
    pub const TTL: Duration = Duration::from_millis(500);
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

/// Why a request is not let in.
#[derive(Debug)]
pub enum Refusal {
    /// 401: no credential, or one that is not a valid token.
    Unauthenticated(&'static str),
    /// 403: a valid token without the permission.
    Forbidden(Permission),
    /// The store could not be asked.
    Store(sqlx::Error),
}

/// The permissions of the request's bearer token.
pub async fn authenticate(state: &Segments, headers: &HeaderMap) -> Result<Permissions, Refusal> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(Refusal::Unauthenticated("missing bearer token (Authorization: Bearer <token>)"));
    }
    let token = shared::auth::bearer_token(headers)
        .ok_or(Refusal::Unauthenticated("the Authorization header must be \"Bearer <token>\""))?;
    if state.admin().matches(token) {
        return Ok(Permissions::all());
    }
    let hash = hash_token(token);
    if let Some(permissions) = state.key_cache().get(&hash) {
        return Ok(permissions);
    }
    match crate::store::api_key_permissions(state.db(), &hash).await.map_err(Refusal::Store)? {
        Some(stored) => {
            let permissions = Permissions::from_csv(&stored);
            state.key_cache().insert(hash, permissions);
            Ok(permissions)
        }
        None => Err(Refusal::Unauthenticated("invalid, unknown or revoked token")),
    }
}

/// The bearer's permissions if they hold `wanted`.
pub async fn authorize(state: &Segments, headers: &HeaderMap, wanted: Permission) -> Result<(), Refusal> {
    let permissions = authenticate(state, headers).await?;
    if permissions.contains(wanted) { Ok(()) } else { Err(Refusal::Forbidden(wanted)) }
}

/// The permission a const generic `P` names (a [`Permission`] as `u32`).
pub fn permission_of(bits: u32) -> Permission {
    Permission::ALL.into_iter().find(|p| *p as u32 == bits).unwrap_or(Permission::SegmentsRead)
}

/// How long a history link works.
pub const LINK_LIFETIME_SECS: i64 = 300;

/// The key that signs history links: the store's one server secret, so every replica signs
/// and checks alike.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl LinkKey {
    /// Reads the secret from the store, making it first if no replica has.
    pub async fn load(db: &Database) -> Result<Self, sqlx::Error> {
        let candidate: [u8; 32] = rand::random();
        let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
        let stored = crate::store::server_secret(db, "history-links", &hex).await?;
        Ok(Self(Sha256::digest(stored.as_bytes()).into()))
    }

    fn mac(&self, user: &str, from: &str, to: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        // Lengths first, so no two different (user, from, to) run together into the same bytes.
        for part in [user, from, to] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// The signature of a link to `user`'s history over `[from, to]` that works until `expires`
    /// (Unix seconds), hex.
    pub fn sign(&self, user: &str, from: &str, to: &str, expires: i64) -> String {
        self.mac(user, from, to, expires).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `signature` is that of this link (compared in constant time).
    pub fn verify(&self, user: &str, from: &str, to: &str, expires: i64, signature: &str) -> bool {
        let Some(bytes) = decode_hex(signature) else { return false };
        self.mac(user, from, to, expires).verify_slice(&bytes).is_ok()
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
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
    }

    #[test]
    fn link_signatures_bind_every_part() {
        let key = LinkKey([7; 32]);
        let signature = key.sign("73234", "2023-08-30", "2023-08-31", 1_700_000_000);
        assert!(key.verify("73234", "2023-08-30", "2023-08-31", 1_700_000_000, &signature));
        assert!(!key.verify("73235", "2023-08-30", "2023-08-31", 1_700_000_000, &signature));
        assert!(!key.verify("73234", "2023-08-29", "2023-08-31", 1_700_000_000, &signature));
        assert!(!key.verify("73234", "2023-08-30", "2023-09-01", 1_700_000_000, &signature));
        assert!(!key.verify("73234", "2023-08-30", "2023-08-31", 1_700_000_001, &signature));
        assert!(!key.verify("7323", "42023-08-30", "2023-08-31", 1_700_000_000, &signature));
        assert!(!LinkKey([8; 32]).verify("73234", "2023-08-30", "2023-08-31", 1_700_000_000, &signature));
        for bad in ["", "zz", "abc", &signature[..62]] {
            assert!(!key.verify("73234", "2023-08-30", "2023-08-31", 1_700_000_000, bad), "{bad}");
        }
    }
}
