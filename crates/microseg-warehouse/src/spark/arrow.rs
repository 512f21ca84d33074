//! Just enough of the Arrow IPC stream format (arrow.apache.org/docs/format/Columnar.html,
//! `Message.fbs`, `Schema.fbs`) to read a result's first column when it is text.
//!
//! A stream is a sequence of messages, each `0xFFFFFFFF`, a little-endian length and a
//! FlatBuffers `Message` (a `Schema` or a `RecordBatch`), then the batch's body. Every
//! offset read from the input is checked against its bounds: a malformed stream is an
//! error, never a panic.

/// A FlatBuffers buffer and checked reads from it.
#[derive(Clone, Copy)]
struct Fb<'a>(&'a [u8]);

impl<'a> Fb<'a> {
    fn bytes(self, at: usize, n: usize) -> Result<&'a [u8], String> {
        at.checked_add(n)
            .and_then(|end| self.0.get(at..end))
            .ok_or_else(|| "a malformed Arrow message (an offset out of bounds)".to_string())
    }
    fn u8(self, at: usize) -> Result<u8, String> {
        Ok(self.bytes(at, 1)?[0])
    }
    fn u16(self, at: usize) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.bytes(at, 2)?.try_into().expect("2"),
        ))
    }
    fn u32(self, at: usize) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(at, 4)?.try_into().expect("4"),
        ))
    }
    fn i64(self, at: usize) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.bytes(at, 8)?.try_into().expect("8"),
        ))
    }

    /// The root table's position.
    fn root(self) -> Result<Table<'a>, String> {
        Ok(Table {
            fb: self,
            at: self.u32(0)? as usize,
        })
    }
}

/// A FlatBuffers table.
#[derive(Clone, Copy)]
struct Table<'a> {
    fb: Fb<'a>,
    at: usize,
}

impl<'a> Table<'a> {
    /// Field `i`'s position, `None` when absent.
    fn field(self, i: usize) -> Result<Option<usize>, String> {
        let soffset = self.fb.u32(self.at)? as i32 as i64;
        let vtable = usize::try_from(self.at as i64 - soffset)
            .map_err(|_| "a malformed Arrow message (a vtable out of bounds)".to_string())?;
        let len = self.fb.u16(vtable)? as usize;
        let slot = 4 + 2 * i;
        if slot + 2 > len {
            return Ok(None);
        }
        let off = self.fb.u16(vtable + slot)? as usize;
        Ok((off != 0).then_some(self.at + off))
    }
    fn scalar_u8(self, i: usize) -> Result<u8, String> {
        self.field(i)?.map_or(Ok(0), |at| self.fb.u8(at))
    }
    fn scalar_i64(self, i: usize) -> Result<i64, String> {
        self.field(i)?.map_or(Ok(0), |at| self.fb.i64(at))
    }
    /// Field `i` as an offset to another object (table or vector).
    fn target(self, i: usize) -> Result<Option<usize>, String> {
        match self.field(i)? {
            None => Ok(None),
            Some(at) => Ok(Some(at + self.fb.u32(at)? as usize)),
        }
    }
    fn table(self, i: usize) -> Result<Option<Table<'a>>, String> {
        Ok(self.target(i)?.map(|at| Table { fb: self.fb, at }))
    }
    /// Field `i` as a vector: (first element's position, length).
    fn vector(self, i: usize) -> Result<(usize, usize), String> {
        match self.target(i)? {
            None => Ok((0, 0)),
            Some(at) => Ok((at + 4, self.fb.u32(at)? as usize)),
        }
    }
}

/// `MessageHeader` values.
const SCHEMA: u8 = 1;
const RECORD_BATCH: u8 = 3;
/// `Type` values of text columns.
const UTF8: u8 = 5;
const LARGE_UTF8: u8 = 20;

/// Appends the first column of every record batch in the IPC stream `data` to `out`
/// (nulls skipped); the column must be text.
pub fn first_text_column(data: &[u8], out: &mut Vec<String>) -> Result<(), String> {
    let mut pos = 0;
    let mut large = None;
    while pos < data.len() {
        let word = Fb(data).u32(pos)?;
        pos += 4;
        let len = if word == 0xFFFF_FFFF {
            let n = Fb(data).u32(pos)?;
            pos += 4;
            n
        } else {
            word
        } as usize;
        if len == 0 {
            break; // end of stream
        }
        let meta = Fb(Fb(data).bytes(pos, len)?);
        pos += len;
        let message = meta.root()?;
        let header_type = message.scalar_u8(1)?;
        let header = message
            .table(2)?
            .ok_or("an Arrow message without a header")?;
        let body_len = usize::try_from(message.scalar_i64(3)?)
            .map_err(|_| "an Arrow message with a negative body")?;
        let body = Fb(data).bytes(pos, body_len)?;
        pos += body_len;
        match header_type {
            SCHEMA => {
                let (fields, n) = header.vector(1)?;
                if n == 0 {
                    // A statement without a result (DDL): its batches have no column.
                    large = Some(None);
                    continue;
                }
                let at = fields + meta.u32(fields)? as usize;
                let field = Table { fb: meta, at };
                large = Some(Some(match field.scalar_u8(2)? {
                    UTF8 => false,
                    LARGE_UTF8 => true,
                    other => {
                        return Err(format!(
                            "the result's first column is Arrow type {other}, not text"
                        ))
                    }
                }));
            }
            RECORD_BATCH => {
                let Some(large) = large.ok_or("an Arrow record batch before its schema")? else {
                    continue;
                };
                if header.field(3)?.is_some() {
                    return Err("compressed Arrow batches are not supported".into());
                }
                let rows = usize::try_from(header.scalar_i64(0)?)
                    .map_err(|_| "an Arrow batch with a negative length")?;
                let (nodes, n_nodes) = header.vector(1)?;
                let (buffers, n_buffers) = header.vector(2)?;
                if n_nodes == 0 || n_buffers < 3 {
                    return Err("an Arrow batch without its column's buffers".into());
                }
                let null_count = meta.i64(nodes + 8)?;
                let buffer = |i: usize| -> Result<&[u8], String> {
                    let off = usize::try_from(meta.i64(buffers + 16 * i)?)
                        .map_err(|_| "a negative Arrow buffer offset")?;
                    let len = usize::try_from(meta.i64(buffers + 16 * i + 8)?)
                        .map_err(|_| "a negative Arrow buffer length")?;
                    Fb(body).bytes(off, len)
                };
                let validity = buffer(0)?;
                let offsets = buffer(1)?;
                let values = buffer(2)?;
                let width = if large { 8 } else { 4 };
                let offset = |i: usize| -> Result<usize, String> {
                    let b = Fb(offsets).bytes(i * width, width)?;
                    let x = if large {
                        i64::from_le_bytes(b.try_into().expect("8"))
                    } else {
                        i64::from(i32::from_le_bytes(b.try_into().expect("4")))
                    };
                    usize::try_from(x).map_err(|_| "a negative Arrow offset".to_string())
                };
                for row in 0..rows {
                    if null_count > 0
                        && !validity.is_empty()
                        && Fb(validity).u8(row / 8)? & (1 << (row % 8)) == 0
                    {
                        continue;
                    }
                    let (start, end) = (offset(row)?, offset(row + 1)?);
                    let text = Fb(values).bytes(start, end.saturating_sub(start))?;
                    out.push(
                        std::str::from_utf8(text)
                            .map_err(|_| "an Arrow text value that is not UTF-8")?
                            .to_string(),
                    );
                }
            }
            _ => {} // dictionaries and others: not produced for text results
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for input in [
            &[0xff, 0xff, 0xff, 0xff, 8, 0, 0, 0, 1, 2][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
            &[4, 0, 0, 0, 200, 0, 0, 0][..],
            &[1, 2, 3][..],
        ] {
            assert!(first_text_column(input, &mut out).is_err(), "{input:?}");
        }
        assert!(out.is_empty());
        // The end-of-stream marker alone: no rows.
        first_text_column(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
