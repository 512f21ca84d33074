//! The few Protocol Buffers messages of Spark Connect microseg sends and reads, by field
//! number as `spark/connect/base.proto` and `relations.proto` define them.

/// Appends a varint.
fn varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Appends a length-delimited field (a string, bytes or an embedded message).
fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field) << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `ExecutePlanRequest { session_id, user_context { user_id }, plan { root { sql { query } } },
/// client_type }`.
pub fn execute_sql(session_id: &str, user_id: &str, query: &str) -> Vec<u8> {
    let mut sql = Vec::new();
    bytes_field(&mut sql, 1, query.as_bytes()); // SQL.query
    let mut relation = Vec::new();
    bytes_field(&mut relation, 10, &sql); // Relation.sql
    let mut plan = Vec::new();
    bytes_field(&mut plan, 1, &relation); // Plan.root
    let mut user = Vec::new();
    bytes_field(&mut user, 1, user_id.as_bytes()); // UserContext.user_id
    let mut request = Vec::new();
    bytes_field(&mut request, 1, session_id.as_bytes()); // session_id
    bytes_field(&mut request, 2, &user); // user_context
    bytes_field(&mut request, 3, &plan); // plan
    bytes_field(&mut request, 4, b"microseg"); // client_type
    request
}

/// A message's fields: (number, wire value).
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// One field's value.
pub enum Wire<'a> {
    /// A varint.
    Varint,
    /// Length-delimited bytes.
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value (unused here).
    Fixed,
}

impl<'a> Fields<'a> {
    /// The fields of the encoded message `buf`.
    pub fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or("a truncated protobuf varint")?;
            self.buf = rest;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err("a protobuf varint longer than 10 bytes".into())
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let mut read = || -> Result<(u32, Wire<'a>), String> {
            let key = self.varint()?;
            let field = (key >> 3) as u32;
            let wire = match key & 7 {
                0 => {
                    self.varint()?;
                    Wire::Varint
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    if self.buf.len() < n {
                        return Err("a truncated protobuf fixed field".into());
                    }
                    self.buf = &self.buf[n..];
                    Wire::Fixed
                }
                2 => {
                    let n = self.varint()? as usize;
                    if self.buf.len() < n {
                        return Err("a truncated protobuf field".into());
                    }
                    let (value, rest) = self.buf.split_at(n);
                    self.buf = rest;
                    Wire::Bytes(value)
                }
                other => return Err(format!("protobuf wire type {other} is not supported")),
            };
            Ok((field, wire))
        };
        let item = read();
        if item.is_err() {
            self.buf = &[];
        }
        Some(item)
    }
}

/// What one `ExecutePlanResponse` carries that microseg reads.
#[derive(Default)]
pub struct Response<'a> {
    /// `arrow_batch.data`: an Arrow IPC stream.
    pub arrow: Option<&'a [u8]>,
}

/// Reads an `ExecutePlanResponse`.
pub fn response(buf: &[u8]) -> Result<Response<'_>, String> {
    let mut out = Response::default();
    for field in Fields::new(buf) {
        if let (2, Wire::Bytes(batch)) = field? {
            // ArrowBatch { row_count = 1, data = 2, ... }
            for f in Fields::new(batch) {
                if let (2, Wire::Bytes(data)) = f? {
                    out.arrow = Some(data);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_field_by_field() {
        // Decoded by hand from the encoding rules (varint keys, lengths), not by this code.
        let req = execute_sql("s", "u", "select 1");
        assert_eq!(
            req,
            [
                10, 1, b's', // 1: session_id
                18, 3, 10, 1, b'u', // 2: user_context { 1: user_id }
                26, 14, 10, 12, 82, 10, 10, 8, b's', b'e', b'l', b'e', b'c', b't', b' ', b'1', 34,
                8, b'm', b'i', b'c', b'r', b'o', b's', b'e', b'g',
            ]
        );
        let fields: Vec<u32> = Fields::new(&req).map(|f| f.unwrap().0).collect();
        assert_eq!(fields, [1, 2, 3, 4]);
        // Truncated input is an error, not a panic.
        assert!(Fields::new(&req[..req.len() - 3]).any(|f| f.is_err()));
        assert!(Fields::new(&[0xff; 12]).any(|f| f.is_err()));
    }
}
