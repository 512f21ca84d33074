//! Channel adapters: hand one rendered message to the outside world. E-mail goes over SMTP
//! (through `lettre`: plain, STARTTLS or TLS, with a login) to the relay of
//! `[channels.email]` (a local MTA, or the e-mail provider's SMTP endpoint); a webhook
//! message as an HTTP POST to `[channels.webhook] url` (plain `http://`: HTTPS receivers
//! sit behind a TLS-terminating relay for now); every step has a timeout. SMS and push go
//! through configurable HTTP gateways; any channel may instead append to an NDJSON file
//! (`file = "PATH"`).
//!
//! The message is built here, not by the relay: headers from rendered values have their
//! line breaks removed (no header injection from a trait), non-ASCII subjects are
//! encoded-words (RFC 2047), bodies are base64 (RFC 2045) so no line of a template can
//! end the SMTP data early.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;
use microseg_core::Timestamp;

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `[channels.NAME]` is missing or wrong.
    #[error("[channels.{channel}] in microseg.toml: {reason}")]
    Config {
        /// The channel.
        channel: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The address is not one this channel can send to.
    #[error("{0}")]
    Address(String),
    /// The server refused or could not be reached.
    #[error("{server}: {reason}")]
    Failed {
        /// host:port.
        server: String,
        /// What happened (an SMTP reply, an HTTP status, an I/O error).
        reason: String,
    },
}

/// Each read or write waits at most this long.
const TIMEOUT: Duration = Duration::from_secs(15);

/// One message as handed to a channel.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Where it goes: an e-mail address, or for webhooks the URL (`None`: the configured
    /// one).
    pub to: Option<&'a str>,
    /// The rendered fields.
    pub content: &'a BTreeMap<String, String>,
    /// The message's idempotency key (the e-mail's Message-ID, the webhook's header).
    pub idempotency_key: &'a str,
    /// The webhook body's other fields (campaign, variant, profile, offer, test).
    pub meta: serde_json::Value,
    /// A marketing e-mail's one-click unsubscribe link (RFC 8058), if it has one.
    pub unsubscribe: Option<String>,
    /// When it is sent.
    pub at: Timestamp,
}

/// `[channels.email]`: `smtp = "smtp://host:port"` (plain, to a local relay),
/// `"smtp+starttls://host:port"` (STARTTLS required) or `"smtps://host:port"` (TLS from the
/// start); `username` with the password in the environment variable `password_env`;
/// `ca_file`, a PEM file of the relay's private certificate authority; `from`.
#[derive(Clone)]
pub struct Email {
    /// host:port.
    pub server: String,
    transport: lettre::SmtpTransport,
    /// The sender address.
    pub from: String,
    /// The public URL of the server's `/v1/unsubscribe` (HTTPS behind a proxy), for the
    /// links of marketing e-mail.
    pub unsubscribe_url: Option<String>,
}

/// `[channels.webhook]`: `url = "http://host:port/path"`, optional `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written.
    pub url: String,
    /// Signs each request (`X-Microseg-Signature`) when set.
    pub secret: Option<String>,
}

fn config_error(channel: &'static str, reason: impl Into<String>) -> SendError {
    SendError::Config {
        channel,
        reason: reason.into(),
    }
}

fn text_setting<'t>(
    table: &'t toml::Table,
    channel: &'static str,
    key: &str,
) -> Result<&'t str, SendError> {
    match table.get(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(_) => Err(config_error(channel, format!("`{key}` must be a string"))),
        None => Err(config_error(channel, format!("`{key}` is missing"))),
    }
}

/// host:port of an `http://` or `smtp://` URL, and the path after it.
fn split_url(
    url: &str,
    scheme: &str,
    default_port: u16,
    channel: &'static str,
) -> Result<(String, String), SendError> {
    let rest = url
        .strip_prefix(&format!("{scheme}://"))
        .ok_or_else(|| config_error(channel, format!("'{url}': write {scheme}://host:port")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(config_error(
            channel,
            format!("'{url}': no host (or credentials in it)"),
        ));
    }
    let server = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok((server, path.to_string()))
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("server", &self.server)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// The SMTP transport `[channels.email]` describes.
fn transport(table: &toml::Table, url: &str) -> Result<(String, lettre::SmtpTransport), SendError> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let (scheme, default_port) = if url.starts_with("smtps://") {
        ("smtps", 465)
    } else if url.starts_with("smtp+starttls://") {
        ("smtp+starttls", 587)
    } else {
        ("smtp", 25)
    };
    let (server, _) = split_url(url, scheme, default_port, "email")?;
    let (host, port) = server.rsplit_once(':').expect("split_url gives host:port");
    let port: u16 = port
        .parse()
        .map_err(|_| config_error("email", "smtp: a port number"))?;
    let tls = if scheme == "smtp" {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(host.to_string());
        if table.contains_key("ca_file") {
            let path = text_setting(table, "email", "ca_file")?;
            let pem = std::fs::read(path)
                .map_err(|e| config_error("email", format!("ca_file {path}: {e}")))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| config_error("email", format!("ca_file {path}: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| config_error("email", format!("TLS: {e}")))?;
        if scheme == "smtps" {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        }
    };
    let mut builder = lettre::SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if table.contains_key("username") {
        let user = text_setting(table, "email", "username")?;
        let var = text_setting(table, "email", "password_env")?;
        let password = std::env::var(var).map_err(|_| {
            config_error(
                "email",
                format!("password_env: the variable {var} is not set"),
            )
        })?;
        builder = builder.credentials(Credentials::new(user.to_string(), password));
    }
    Ok((server, builder.build()))
}

impl Email {
    /// Reads `[channels.email]`.
    ///
    /// # Errors
    ///
    /// A missing section or key, a URL that is not `smtp://`, a bad sender.
    pub fn from_config(channels: &BTreeMap<String, toml::Table>) -> Result<Email, SendError> {
        let table = channels.get("email").ok_or_else(|| {
            config_error("email", "missing (smtp = \"smtp://host:port\", from = ...)")
        })?;
        let (server, transport) = transport(table, text_setting(table, "email", "smtp")?)?;
        let from = text_setting(table, "email", "from")?;
        check_address(from).map_err(|reason| config_error("email", format!("from: {reason}")))?;
        let unsubscribe_url = match table.get("unsubscribe_url") {
            None => None,
            Some(_) => {
                let u = text_setting(table, "email", "unsubscribe_url")?;
                if !u.starts_with("https://") && !u.starts_with("http://127.0.0.1") {
                    return Err(config_error(
                        "email",
                        "unsubscribe_url: an https:// URL (RFC 8058 one-click needs HTTPS)",
                    ));
                }
                Some(u.to_string())
            }
        };
        Ok(Email {
            server,
            transport,
            from: from.to_string(),
            unsubscribe_url,
        })
    }

    /// Sends `m` to `m.to` over SMTP.
    ///
    /// # Errors
    ///
    /// A bad address, or the relay's refusal or silence.
    pub fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        let to =
            m.to.ok_or_else(|| SendError::Address("an e-mail needs an address to go to".into()))?;
        check_address(to).map_err(|r| SendError::Address(format!("'{to}': {r}")))?;
        let data = email_message(
            &self.from,
            to,
            m.content,
            m.idempotency_key,
            m.at,
            m.unsubscribe.as_deref(),
        );
        let fail = |reason: String| SendError::Failed {
            server: self.server.clone(),
            reason,
        };
        let envelope = lettre::address::Envelope::new(
            Some(self.from.parse().map_err(|e| fail(format!("from: {e}")))?),
            vec![to
                .parse()
                .map_err(|e| SendError::Address(format!("'{to}': {e}")))?],
        )
        .map_err(|e| fail(e.to_string()))?;
        use lettre::Transport as _;
        self.transport
            .send_raw(&envelope, data.as_bytes())
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    }
}

impl Webhook {
    /// Reads `[channels.webhook]` (`url`, optional `secret` for the signature).
    ///
    /// # Errors
    ///
    /// A missing section or URL, a URL that is not `http://`.
    pub fn from_config(channels: &BTreeMap<String, toml::Table>) -> Result<Webhook, SendError> {
        let table = channels
            .get("webhook")
            .ok_or_else(|| config_error("webhook", "missing (url = \"http://host:port/path\")"))?;
        Webhook::from_table(table)
    }

    fn from_table(table: &toml::Table) -> Result<Webhook, SendError> {
        let url = text_setting(table, "webhook", "url")?;
        split_url(url, "http", 80, "webhook")?;
        let secret = match table.get("secret") {
            None => None,
            Some(_) => Some(text_setting(table, "webhook", "secret")?.to_string()),
        };
        Ok(Webhook {
            url: url.to_string(),
            secret,
        })
    }

    /// POSTs `m` as JSON (`{..meta, "content"}`) with its `Idempotency-Key` (and, with a
    /// secret, `X-Microseg-Signature` as the segment webhooks sign) to `m.to` or the
    /// configured URL; a 2xx answer is success.
    ///
    /// # Errors
    ///
    /// A bad URL, no answer, or an answer other than 2xx.
    pub fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        let url = m.to.unwrap_or(&self.url);
        let mut body = m.meta.clone();
        body["content"] = serde_json::json!(m.content);
        let body = body.to_string();
        let mut headers = vec![("Idempotency-Key".to_string(), m.idempotency_key.to_string())];
        if let Some(secret) = &self.secret {
            let t = m.at.0.div_euclid(1000);
            headers.push((
                "X-Microseg-Signature".into(),
                microseg_core::sign::signature(secret, t, &body),
            ));
        }
        post(url, &headers, &body)
    }
}

/// `[channels.sms]` / `[channels.push]`: an HTTP gateway: `url`, an optional
/// `auth_header` (the `Authorization` value), and `body`, a minijinja template of the JSON
/// body over `to`, the message's fields and `idempotency_key` (values JSON-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    channel: &'static str,
    url: String,
    auth: Option<String>,
    body: String,
}

impl Gateway {
    fn from_table(channel: &'static str, table: &toml::Table) -> Result<Gateway, SendError> {
        let url = text_setting(table, channel, "url")?;
        split_url(url, "http", 80, channel)?;
        let body = text_setting(table, channel, "body")?.to_string();
        crate::render::environment()
            .template_from_str(&body)
            .map_err(|e| config_error(channel, format!("body: {e}")))?;
        let auth = match table.get("auth_header") {
            None => None,
            Some(_) => Some(text_setting(table, channel, "auth_header")?.to_string()),
        };
        Ok(Gateway {
            channel,
            url: url.to_string(),
            auth,
            body,
        })
    }

    /// POSTs the rendered body to the gateway.
    ///
    /// # Errors
    ///
    /// No address, a body that does not render to JSON, the gateway's refusal.
    pub fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        let to =
            m.to.ok_or_else(|| SendError::Address(format!("no {} address", self.channel)))?;
        let mut ctx = serde_json::Map::new();
        // Every value is a JSON string literal (quotes included), so a template writes
        // `{"to": {{ to }}}` and no value can break out of its string.
        let quoted = |v: &str| serde_json::Value::String(v.to_string()).to_string();
        ctx.insert("to".into(), quoted(to).into());
        ctx.insert("idempotency_key".into(), quoted(m.idempotency_key).into());
        for (k, v) in m.content {
            ctx.insert(k.clone(), quoted(v).into());
        }
        let body = crate::render::environment()
            .render_str(&self.body, serde_json::Value::Object(ctx))
            .map_err(|e| config_error(self.channel, format!("body: {e}")))?;
        serde_json::from_str::<serde_json::Value>(&body).map_err(|e| {
            config_error(self.channel, format!("body does not render to JSON: {e}"))
        })?;
        let mut headers = vec![("Idempotency-Key".to_string(), m.idempotency_key.to_string())];
        if let Some(a) = &self.auth {
            headers.push(("Authorization".into(), a.clone()));
        }
        post(&self.url, &headers, &body)
    }
}

/// `file = "PATH"` in a channel's section: messages appended to an NDJSON file (relative
/// paths from the workspace) instead of sent; for demos and tests.
#[derive(Debug)]
pub struct FileSink {
    path: std::path::PathBuf,
    file: std::sync::Mutex<std::fs::File>,
}

impl FileSink {
    fn open(path: std::path::PathBuf) -> Result<FileSink, SendError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SendError::Failed {
                server: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(FileSink {
            path,
            file: std::sync::Mutex::new(file),
        })
    }

    /// Appends `{..meta, "to", "idempotency_key", "content", "at"}` as one line.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        let mut line = m.meta.clone();
        line["to"] = serde_json::json!(m.to);
        line["idempotency_key"] = serde_json::json!(m.idempotency_key);
        line["content"] = serde_json::json!(m.content);
        line["at"] = serde_json::json!(m.at.to_string());
        if let Some(u) = &m.unsubscribe {
            line["unsubscribe"] = serde_json::json!(u);
        }
        let mut text = line.to_string();
        text.push('\n');
        self.file
            .lock()
            .expect("file sink lock")
            .write_all(text.as_bytes())
            .map_err(|e| SendError::Failed {
                server: self.path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Makes what was appended durable (before its delivery is recorded).
    ///
    /// # Errors
    ///
    /// The sync failed.
    pub fn sync(&self) -> Result<(), SendError> {
        self.file
            .lock()
            .expect("file sink lock")
            .sync_data()
            .map_err(|e| SendError::Failed {
                server: self.path.display().to_string(),
                reason: e.to_string(),
            })
    }
}

/// How one channel hands messages over.
#[derive(Debug)]
pub enum Adapter {
    /// SMTP.
    Email(Email),
    /// HTTP POST of the message.
    Webhook(Webhook),
    /// An SMS or push HTTP gateway.
    Gateway(Gateway),
    /// An NDJSON file.
    File(FileSink),
}

impl Adapter {
    /// Hands `m` over.
    ///
    /// # Errors
    ///
    /// What the adapter says.
    pub fn send(&self, m: &Outgoing<'_>) -> Result<(), SendError> {
        match self {
            Adapter::Email(a) => a.send(m),
            Adapter::Webhook(a) => a.send(m),
            Adapter::Gateway(a) => a.send(m),
            Adapter::File(a) => a.send(m),
        }
    }

    /// Reads the adapter of `channel` from `[channels.CHANNEL]` (`file` wins over the
    /// network settings); `dir` resolves a relative file path.
    ///
    /// # Errors
    ///
    /// A missing or wrong section; web placements have no adapter (they are answered by
    /// `decide`).
    pub fn from_config(
        channel: crate::Channel,
        channels: &BTreeMap<String, toml::Table>,
        dir: &std::path::Path,
    ) -> Result<Adapter, SendError> {
        use crate::Channel;
        let name = channel.name();
        let static_name: &'static str = match channel {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
            Channel::Web => {
                return Err(SendError::Address(
                    "a web placement is shown, not sent: it is answered by decide".into(),
                ))
            }
        };
        let table = channels
            .get(name)
            .ok_or_else(|| config_error(static_name, "missing: how to send this channel"))?;
        if table.contains_key("file") {
            let path = dir.join(text_setting(table, static_name, "file")?);
            return Ok(Adapter::File(FileSink::open(path)?));
        }
        Ok(match channel {
            Channel::Email => Adapter::Email(Email::from_config(channels)?),
            Channel::Webhook => Adapter::Webhook(Webhook::from_table(table)?),
            _ => Adapter::Gateway(Gateway::from_table(static_name, table)?),
        })
    }

    /// Makes what was handed over durable where that is the adapter's job (a file).
    ///
    /// # Errors
    ///
    /// The sync failed.
    pub fn sync(&self) -> Result<(), SendError> {
        match self {
            Adapter::File(f) => f.sync(),
            _ => Ok(()),
        }
    }
}

/// POSTs `body` (JSON) to `url` with `headers`; a 2xx answer is success.
fn post(url: &str, headers: &[(String, String)], body: &str) -> Result<(), SendError> {
    let (server, path) = split_url(url, "http", 80, "webhook")
        .map_err(|_| SendError::Address(format!("'{url}': write http://host:port/path")))?;
    let fail = |reason: String| SendError::Failed {
        server: server.clone(),
        reason,
    };
    let stream = connect(&server).map_err(fail)?;
    let mut reader = BufReader::new(stream);
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        // Header values from settings and keys: no line breaks can get in.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let io = |e: std::io::Error| fail(e.to_string());
    reader.get_mut().write_all(head.as_bytes()).map_err(io)?;
    reader.get_mut().write_all(body.as_bytes()).map_err(io)?;
    let mut status = String::new();
    (&mut reader)
        .take(4096)
        .read_line(&mut status)
        .map_err(io)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| fail(format!("not an HTTP answer: {:?}", status.trim())))?;
    // Drain (bounded) so the receiver sees a clean close.
    let _ = reader.take(64 * 1024).read_to_end(&mut Vec::new());
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(fail(format!("answered {code}")))
    }
}

fn connect(server: &str) -> Result<TcpStream, String> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A plain e-mail address: one `@`, no spaces, brackets or line breaks, at most 254 bytes.
fn check_address(a: &str) -> Result<(), &'static str> {
    let ok = a.len() <= 254
        && a.split('@').count() == 2
        && !a.starts_with('@')
        && !a.ends_with('@')
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[],;:\\\"".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("not a plain e-mail address (name@domain)")
    }
}

/// A header value: line breaks become spaces; non-ASCII as a UTF-8 encoded-word.
fn header_value(v: &str) -> String {
    let flat: String = v
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if flat.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        flat
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(flat.as_bytes())
        )
    }
}

/// Base64 in lines of 76 (RFC 2045).
fn base64_lines(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// The e-mail as sent (CRLF line ends): `subject`, and `text` and/or `html` (both:
/// multipart/alternative). Message-ID is `<KEY@sender-domain>`.
pub fn email_message(
    from: &str,
    to: &str,
    content: &BTreeMap<String, String>,
    key: &str,
    at: Timestamp,
    unsubscribe: Option<&str>,
) -> String {
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let date = jiff::Timestamp::from_millisecond(at.0)
        .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string())
        .unwrap_or_default();
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{key}@{domain}>\r\nMIME-Version: 1.0\r\n",
        header_value(content.get("subject").map_or("", String::as_str)),
    );
    // RFC 8058 one-click unsubscribe, and a visible link in each body that lacks it.
    let mut content = content.clone();
    if let Some(url) = unsubscribe {
        let url = header_value(url);
        m.push_str(&format!(
            "List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ));
        if let Some(text) = content.get_mut("text").filter(|t| !t.contains(&url)) {
            text.push_str(&format!("\n\nUnsubscribe: {url}"));
        }
        if let Some(html) = content.get_mut("html").filter(|t| !t.contains(&url)) {
            html.push_str(&format!("<p><a href=\"{url}\">Unsubscribe</a></p>"));
        }
    }
    let content = &content;
    let part = |ty: &str, body: &str| {
        format!(
            "Content-Type: text/{ty}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(body)
        )
    };
    match (content.get("text"), content.get("html")) {
        (Some(text), Some(html)) => {
            let boundary = format!("microseg-{key}");
            m.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{}--{boundary}\r\n{}--{boundary}--\r\n",
                part("plain", text),
                part("html", html)
            ));
        }
        (Some(text), None) => m.push_str(&part("plain", text)),
        (None, Some(html)) => m.push_str(&part("html", html)),
        (None, None) => m.push_str(&part("plain", "")),
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_from_templates_cannot_inject_and_bodies_are_base64() {
        let content: BTreeMap<String, String> = [
            (
                "subject".to_string(),
                "Hi\r\nBcc: x@evil.example".to_string(),
            ),
            ("text".to_string(), ".\r\nQUIT\r\n".to_string()),
        ]
        .into();
        let m = email_message(
            "shop@example.com",
            "a@example.com",
            &content,
            "k.1",
            Timestamp(0),
            None,
        );
        assert!(m.contains("Subject: Hi  Bcc: x@evil.example\r\n"), "{m}");
        assert!(!m.contains("\r\nBcc:"));
        assert!(m.contains("Message-ID: <k.1@example.com>\r\n"));
        assert!(m.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        // base64 of ".\r\nQUIT\r\n" (printf '.\r\nQUIT\r\n' | base64)
        assert!(m.contains("\r\n\r\nLg0KUVVJVA0K\r\n"), "{m}");
        // printf 'Grüße' | base64
        let c: BTreeMap<String, String> = [("subject".to_string(), "Grüße".to_string())].into();
        let m = email_message(
            "shop@example.com",
            "a@example.com",
            &c,
            "k",
            Timestamp(0),
            Some("https://shop.example/u?t=1.email.ab"),
        );
        assert!(m.contains("List-Unsubscribe: <https://shop.example/u?t=1.email.ab>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{m}");
        assert!(m.contains("Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"), "{m}");
    }

    #[test]
    fn addresses_and_urls_are_checked() {
        assert!(check_address("anna@example.com").is_ok());
        for bad in [
            "anna",
            "a@b@c",
            "a b@c",
            "<a@b>",
            "a@b\r\nRCPT TO:<x@y>",
            "@b",
            "a@",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert_eq!(
            split_url("smtp://127.0.0.1:2525", "smtp", 25, "email")
                .unwrap()
                .0,
            "127.0.0.1:2525"
        );
        assert_eq!(
            split_url("http://hooks.local/a/b", "http", 80, "webhook").unwrap(),
            ("hooks.local:80".to_string(), "/a/b".to_string())
        );
        assert!(split_url("https://x", "http", 80, "webhook").is_err());
        assert!(split_url("http://user:pw@x/", "http", 80, "webhook").is_err());
    }
}
