//! Spark through Spark Connect (spark.apache.org/docs/latest/spark-connect-overview.html):
//! gRPC over HTTP/2 (`h2`), one `ExecutePlan` call per SQL statement, results read from
//! the Arrow batches of the response stream.
//!
//! Only what microseg needs is spoken: a SQL relation as the plan, text results. No TLS
//! and no authentication token: point it at a Spark Connect endpoint on a trusted network
//! (or through a tunnel), as docs/warehouse.md says.

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::runtime::Runtime;

use crate::{Session, WarehouseError};

mod arrow;
mod proto;

pub use arrow::first_text_column;

/// Largest response message accepted (Spark's own default limit is 128 MiB).
const MAX_MESSAGE: usize = 128 << 20;

/// A Spark Connect session.
pub struct Spark {
    runtime: Runtime,
    client: SendRequest<Bytes>,
    authority: String,
    session_id: String,
}

fn err(reason: impl std::fmt::Display) -> WarehouseError {
    WarehouseError::Engine {
        engine: "spark",
        reason: reason.to_string(),
    }
}

/// `host:port` of an `sc://host:port[/]` URL.
fn authority(url: &str) -> Result<String, WarehouseError> {
    let bad = |why: &str| WarehouseError::Config(format!("[warehouse.spark] url '{url}': {why}"));
    let rest = url
        .strip_prefix("sc://")
        .ok_or_else(|| bad("must start with sc://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', ';', '@', '?']) {
        return Err(bad(
            "parameters (token, TLS, user) are not supported: use sc://host:port",
        ));
    }
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    Ok(
        if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            rest.to_string()
        } else {
            format!("{rest}:15002")
        },
    )
}

/// A random version-4 UUID (Spark requires session ids to be UUIDs).
fn uuid() -> Result<String, WarehouseError> {
    let h = microseg_store::keys::random_hex(16)?;
    // The version nibble is 4; the variant's top two bits are 10.
    let variant = 8 | (u8::from_str_radix(&h[16..17], 16).expect("hex") & 3);
    Ok(format!(
        "{}-{}-4{}-{variant:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    ))
}

/// Decodes a `grpc-message` (percent-encoded).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC status of a response's headers or trailers, as an error when not OK.
fn status(headers: &http::HeaderMap) -> Result<bool, WarehouseError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(false);
    };
    let code = code.to_str().unwrap_or("?");
    if code == "0" {
        return Ok(true);
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    // Spark's messages carry a JVM stack trace after the first lines.
    let message: String = message.lines().take(3).collect::<Vec<_>>().join(" ");
    Err(err(format!("{message} (gRPC status {code})")))
}

impl Spark {
    /// Connects to the Spark Connect server at `url` (`sc://host:port`).
    pub fn connect(url: &str) -> Result<Spark, WarehouseError> {
        let authority = authority(url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        let client = runtime.block_on(async {
            let connect = |reason: String| WarehouseError::Connect {
                engine: "spark",
                target: authority.clone(),
                reason,
            };
            let tcp = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                tokio::net::TcpStream::connect(&authority),
            )
            .await
            .map_err(|_| connect("timed out after 30 s".into()))?
            .map_err(|e| connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let (client, connection) = h2::client::Builder::new()
                .initial_window_size(8 << 20)
                .initial_connection_window_size(16 << 20)
                .max_frame_size(1 << 20)
                .handshake(tcp)
                .await
                .map_err(|e| connect(e.to_string()))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, WarehouseError>(client)
        })?;
        Ok(Spark {
            runtime,
            client,
            authority,
            session_id: uuid()?,
        })
    }

    /// Runs `sql` and returns the first column of its result as text.
    pub fn sql(&mut self, sql: &str) -> Result<Vec<String>, WarehouseError> {
        let message = proto::execute_sql(&self.session_id, "microseg", sql);
        let mut framed = Vec::with_capacity(message.len() + 5);
        framed.push(0); // not compressed
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let uri = format!(
            "http://{}/spark.connect.SparkConnectService/ExecutePlan",
            self.authority
        );
        let client = self.client.clone();
        self.runtime.block_on(async move {
            let mut client = client.ready().await.map_err(err)?;
            let request = http::Request::builder()
                .method("POST")
                .uri(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .map_err(err)?;
            let (response, mut send) = client.send_request(request, false).map_err(err)?;
            send.send_data(Bytes::from(framed), true).map_err(err)?;
            let response = response.await.map_err(err)?;
            let (parts, mut body) = response.into_parts();
            if parts.status != http::StatusCode::OK {
                return Err(err(format!("HTTP status {}", parts.status)));
            }
            if status(&parts.headers)? {
                return Ok(Vec::new()); // trailers-only success: no rows
            }
            let mut buf: Vec<u8> = Vec::new();
            let mut ids = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(err)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                // Whole gRPC messages: a flag byte, a 4-byte length, the message.
                let mut at = 0;
                while buf.len() - at >= 5 {
                    let len =
                        u32::from_be_bytes(buf[at + 1..at + 5].try_into().expect("4")) as usize;
                    if len > MAX_MESSAGE {
                        return Err(err(format!("a response message of {len} bytes")));
                    }
                    if buf[at] != 0 {
                        return Err(err("a compressed gRPC message (not asked for)"));
                    }
                    if buf.len() - at - 5 < len {
                        break;
                    }
                    let response = proto::response(&buf[at + 5..at + 5 + len]).map_err(err)?;
                    if let Some(data) = response.arrow {
                        arrow::first_text_column(data, &mut ids).map_err(err)?;
                    }
                    at += 5 + len;
                }
                buf.drain(..at);
            }
            let trailers = body.trailers().await.map_err(err)?;
            match trailers {
                Some(t) => {
                    status(&t)?;
                }
                None => return Err(err("the response ended without a gRPC status")),
            }
            Ok(ids)
        })
    }

    /// Makes `database` the session's current database, first creating it when `create`
    /// (a load) and it is missing.
    pub fn use_database(&mut self, database: &str, create: bool) -> Result<(), WarehouseError> {
        let name = microseg_store::sql::Dialect::Spark.ident(database);
        if create {
            self.sql(&format!("CREATE DATABASE IF NOT EXISTS {name}"))?;
        }
        self.sql(&format!("USE {name}"))?;
        Ok(())
    }

    /// Creates (replacing) tables `profiles` and `events` over the Parquet files in
    /// `uri`, a directory the cluster reads.
    pub fn load(&mut self, uri: &str) -> Result<(), WarehouseError> {
        let d = microseg_store::sql::Dialect::Spark;
        let uri = uri.trim_end_matches('/');
        for table in ["profiles", "events"] {
            self.sql(&format!("DROP TABLE IF EXISTS {table}"))?;
            self.sql(&format!(
                "CREATE TABLE {table} USING parquet OPTIONS (path {})",
                d.string(&format!("{uri}/{table}.parquet"))
            ))?;
        }
        Ok(())
    }
}

impl Session for Spark {
    fn ids(&mut self, sql: &str) -> Result<Vec<String>, WarehouseError> {
        self.sql(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_session_ids() {
        assert_eq!(
            authority("sc://127.0.0.1:15002").unwrap(),
            "127.0.0.1:15002"
        );
        assert_eq!(
            authority("sc://spark.internal/").unwrap(),
            "spark.internal:15002"
        );
        assert!(authority("http://x:1").is_err());
        assert!(authority("sc://x:1/;token=abc").is_err());
        let id = uuid().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid().unwrap(), uuid().unwrap());
        assert_eq!(percent_decode("a%20b%ZZ%"), "a b%ZZ%");
        assert_eq!(percent_decode("é%é%4"), "é%é%4");
    }
}
