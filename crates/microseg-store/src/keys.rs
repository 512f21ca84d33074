//! API keys: `write` keys for ingestion (sent as Segment's libraries send theirs) and
//! `admin` tokens for the management API. The secret is shown once; the store keeps its
//! SHA-256.

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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a secret, in hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, StoreError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| StoreError::Invalid(format!("cannot read /dev/urandom: {e}")))?;
    Ok(hex(&buf))
}

impl Store {
    /// Creates a key; returns its id and the secret (not stored).
    pub fn create_key(
        &mut self,
        kind: KeyKind,
        name: Option<&str>,
    ) -> Result<(i64, String), StoreError> {
        let prefix = match kind {
            KeyKind::Write => "msw_",
            KeyKind::Admin => "msa_",
        };
        let secret = format!("{prefix}{}", random_hex(24)?);
        self.conn.execute(
            "INSERT INTO api_keys(kind, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![kind.name(), name, hash_secret(&secret), now_ms()],
        )?;
        Ok((self.conn.last_insert_rowid(), secret))
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, name, hash FROM api_keys ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (id, kind, name, hash) = row?;
            let kind = KeyKind::from_name(&kind).ok_or_else(|| {
                StoreError::Invalid(format!("api key {id}: unknown kind '{kind}'"))
            })?;
            keys.push(ApiKey {
                id,
                kind,
                name,
                hash,
            });
        }
        Ok(keys)
    }
}
