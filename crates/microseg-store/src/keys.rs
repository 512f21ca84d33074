//! API keys: `write` keys for ingestion (sent as Segment's libraries send theirs) and
//! `admin` tokens for the management API. The secret is shown once; the store keeps its
//! SHA-256. A key can be revoked (invalid from now on) or rotated (a new key of the same
//! kind and label; the old one stays valid for a grace period, so the apps that send it
//! can be updated first).

use microseg_core::hex;
use rusqlite::params;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::{now_ms, Store};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Send events and traits.
    Write,
    /// Use the management API.
    Admin,
}

impl KeyKind {
    /// `write` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Write => "write",
            KeyKind::Admin => "admin",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<KeyKind> {
        match name {
            "write" => Some(KeyKind::Write),
            "admin" => Some(KeyKind::Admin),
            _ => None,
        }
    }
}

/// A stored key (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its id.
    pub id: i64,
    /// What it may do.
    pub kind: KeyKind,
    /// Its label.
    pub name: Option<String>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When it stops being valid (UTC ms): the instant it was revoked, or the end of a
    /// rotation's grace; `None` while it is valid with no end.
    pub valid_until: Option<i64>,
    /// The key that replaced it by a rotation.
    pub replaced_by: Option<i64>,
}

impl ApiKey {
    /// Whether the key is accepted at `now` (UTC ms).
    pub fn valid_at(&self, now: i64) -> bool {
        self.valid_until.is_none_or(|until| now < until)
    }
}

/// SHA-256 of a secret, in hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// `bytes` random bytes from the operating system, in hex.
pub fn random_hex(bytes: usize) -> Result<String, StoreError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| StoreError::Invalid(format!("cannot read /dev/urandom: {e}")))?;
    Ok(hex(&buf))
}

/// Inserts a new key with a fresh secret; returns its id and the secret.
fn insert_key(
    conn: &rusqlite::Connection,
    kind: KeyKind,
    name: Option<&str>,
) -> Result<(i64, String), StoreError> {
    let prefix = match kind {
        KeyKind::Write => "msw_",
        KeyKind::Admin => "msa_",
    };
    let secret = format!("{prefix}{}", random_hex(24)?);
    conn.execute(
        "INSERT INTO api_keys(kind, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![kind.name(), name, hash_secret(&secret), now_ms()],
    )?;
    Ok((conn.last_insert_rowid(), secret))
}

impl Store {
    /// Creates a key; returns its id and the secret (not stored).
    pub fn create_key(
        &mut self,
        kind: KeyKind,
        name: Option<&str>,
    ) -> Result<(i64, String), StoreError> {
        insert_key(&self.conn, kind, name)
    }

    /// Every key, oldest first (revoked and expired ones included).
    pub fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, name, hash, valid_until, replaced_by FROM api_keys ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, i64>(0)?, r.get::<_, String>(1)?),
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let ((id, kind), name, hash, valid_until, replaced_by) = row?;
            let kind = KeyKind::from_name(&kind).ok_or_else(|| {
                StoreError::Invalid(format!("api key {id}: unknown kind '{kind}'"))
            })?;
            keys.push(ApiKey {
                id,
                kind,
                name,
                hash,
                valid_until,
                replaced_by,
            });
        }
        Ok(keys)
    }

    fn key(&self, id: i64) -> Result<ApiKey, StoreError> {
        self.keys()?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("no key {id} (see `microseg key list`)")))
    }

    /// Revokes key `id` now (a running server refuses it within a second); returns it.
    pub fn revoke_key(&mut self, id: i64) -> Result<ApiKey, StoreError> {
        let now = now_ms();
        self.key(id)?;
        self.conn.execute(
            "UPDATE api_keys SET valid_until = min(coalesce(valid_until, ?2), ?2) WHERE id = ?1",
            params![id, now],
        )?;
        self.key(id)
    }

    /// Rotates key `id`: a new key of the same kind and label, and the old one valid
    /// for `grace_ms` more (0: not at all). Returns the old key as it is now, the new
    /// key's id and its secret (not stored). A key no longer valid cannot be rotated.
    pub fn rotate_key(
        &mut self,
        id: i64,
        grace_ms: i64,
    ) -> Result<(ApiKey, i64, String), StoreError> {
        let now = now_ms();
        let old = self.key(id)?;
        if !old.valid_at(now) {
            return Err(StoreError::Refused(format!(
                "key {id} is no longer valid; create a new one with `microseg key create`"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (new_id, secret) = insert_key(&tx, old.kind, old.name.as_deref())?;
        tx.execute(
            "UPDATE api_keys SET valid_until = min(coalesce(valid_until, ?2), ?2), replaced_by = ?3
             WHERE id = ?1",
            params![id, now.saturating_add(grace_ms.max(0)), new_id],
        )?;
        tx.commit()?;
        Ok((self.key(id)?, new_id, secret))
    }
}

impl Store {
    /// The workspace's secret `name` (hex), made from /dev/urandom on first use and kept
    /// in the store (never in the config file or a log).
    pub fn secret(&self, name: &str) -> Result<String, StoreError> {
        let fresh = random_hex(32)?;
        self.conn.execute(
            "INSERT OR IGNORE INTO secrets(name, value) VALUES (?1, ?2)",
            rusqlite::params![name, fresh],
        )?;
        Ok(self
            .conn
            .query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })?)
    }
}
