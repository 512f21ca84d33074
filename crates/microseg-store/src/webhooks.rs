//! Webhook subscriptions: where the server POSTs segment membership changes. The secret
//! signs each delivery (HMAC-SHA256 of the body) so the receiver can check the sender; it
//! is kept in the store because signing needs it.

use rusqlite::params;

use crate::error::StoreError;
use crate::keys::random_hex;
use crate::store::{now_ms, Store};

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: i64,
    /// Where deliveries go (`http://host:port/path`).
    pub url: String,
    /// The segments whose changes it receives; `None`: every segment.
    pub segments: Option<Vec<String>>,
    /// The signing secret.
    pub secret: String,
}

impl Store {
    /// Saves a subscription with a fresh secret; returns it.
    pub fn create_webhook(
        &mut self,
        url: &str,
        segments: Option<&[String]>,
    ) -> Result<Webhook, StoreError> {
        let secret = format!("mwh_{}", random_hex(24)?);
        let list = segments
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("webhook segments: {e}")))?;
        self.conn.execute(
            "INSERT INTO webhooks(url, segments, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![url, list, secret, now_ms()],
        )?;
        Ok(Webhook {
            id: self.conn.last_insert_rowid(),
            url: url.to_string(),
            segments: segments.map(<[String]>::to_vec),
            secret,
        })
    }

    /// Every subscription, oldest first.
    pub fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, url, segments, secret FROM webhooks ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, url, segments, secret) = row?;
            let segments = segments
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| StoreError::Invalid(format!("webhook {id}: segments: {e}")))?;
            out.push(Webhook {
                id,
                url,
                segments,
                secret,
            });
        }
        Ok(out)
    }

    /// Deletes a subscription; false when there was none with that id.
    pub fn delete_webhook(&mut self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM webhooks WHERE id = ?1", [id])?
            > 0)
    }
}
