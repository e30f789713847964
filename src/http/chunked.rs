//! A streaming decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
//!
//! [`ChunkedDecoder::decode`] takes whatever bytes have arrived and returns
//! how many it consumed and, when it reached chunk data, the range of that
//! data within the input: the body is never gathered in memory. It is strict
//! where leniency enables smuggling: a chunk size is one or more hex digits
//! (any number of leading zeros, as RFC 9112 allows; a value past u64 or a
//! size field over 1 KiB is refused), line ends are CRLF (a bare LF is
//! refused), chunk extensions and trailers are bounded and otherwise ignored.

#![forbid(unsafe_code)]

use std::ops::Range;

/// Longest chunk-size field accepted, in digits (leading zeros included).
const MAX_SIZE_DIGITS: u16 = 1024;
/// Longest chunk extension accepted, in bytes.
const MAX_EXTENSION: usize = 4096;
/// Largest trailer section accepted, in bytes.
const MAX_TRAILERS: usize = 8192;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not hex digits.
    InvalidSize,
    /// A chunk size whose value does not fit in 64 bits, or whose field is
    /// longer than 1 KiB.
    SizeOverflow,
    /// A line end that is not CRLF, or data not followed by CRLF.
    BadLineEnding,
    /// A chunk extension longer than the limit.
    ExtensionTooLong,
    /// A trailer section larger than the limit.
    TrailersTooLarge,
}

impl ChunkError {
    /// A short description for the response body and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size overflow",
            ChunkError::BadLineEnding => "invalid line ending in chunked body",
            ChunkError::ExtensionTooLong => "chunk extension too long",
            ChunkError::TrailersTooLarge => "trailer section too large",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed.
    pub consumed: usize,
    /// Chunk data found, as a range of the input (within `..consumed`).
    pub data: Option<Range<usize>>,
    /// The last chunk and trailers have been read: the body is complete.
    pub done: bool,
}

/// Decoder state, kept across reads.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u16,
    extension: usize,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            extension: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Data bytes the current chunk has declared and not yet delivered:
    /// with the data seen so far, what the body will reach at least. A
    /// caller enforcing a body limit checks both, so a chunk declared past
    /// the limit is refused before its bytes are waited for.
    pub fn pending(&self) -> u64 {
        match self.state {
            State::Extension | State::SizeLf | State::Data => self.size,
            _ => 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` until it runs out, reaches chunk data, or the
    /// body ends. Call again with the unconsumed rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => {
                    if let Some(d) = hex(b) {
                        if self.size >> 60 != 0 || self.digits == MAX_SIZE_DIGITS {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                    } else if self.digits == 0 {
                        return Err(ChunkError::InvalidSize);
                    } else if b == b';' {
                        self.state = State::Extension;
                        self.extension = 0;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err(ChunkError::InvalidSize);
                    }
                }
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkError::BadLineEnding);
                    } else {
                        self.extension += 1;
                        if self.extension > MAX_EXTENSION {
                            return Err(ChunkError::ExtensionTooLong);
                        }
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = if self.size == 0 {
                        self.line = 0;
                        State::Trailer
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let n = (self.size.min((input.len() - i) as u64)) as usize;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + n,
                        data: Some(i..i + n),
                        done: false,
                    });
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Size;
                    self.size = 0;
                    self.digits = 0;
                }
                State::Trailer => {
                    if b == b'\r' {
                        self.state = if self.line == 0 {
                            State::FinalLf
                        } else {
                            State::TrailerLf
                        };
                    } else if b == b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    } else {
                        self.line += 1;
                        self.trailers += 1;
                        if self.trailers > MAX_TRAILERS {
                            return Err(ChunkError::TrailersTooLarge);
                        }
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.line = 0;
                    self.state = State::Trailer;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Done;
                    return Ok(Decoded {
                        consumed: i + 1,
                        data: None,
                        done: true,
                    });
                }
                State::Done => break,
            }
            i += 1;
        }
        Ok(Decoded {
            consumed: i,
            data: None,
            done: self.state == State::Done,
        })
    }
}

/// What [`ChunkedDecoder::skim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skimmed {
    /// Bytes of the input that belong to the body.
    pub consumed: usize,
    /// Chunk data bytes among them.
    pub data: u64,
    /// The body ended within the input.
    pub done: bool,
}

impl ChunkedDecoder {
    /// Decodes as far as `input` goes, or to the end of the body, without
    /// handing out the data: for callers that relay or discard the raw
    /// bytes and need only the framing checked and the size counted.
    pub fn skim(&mut self, input: &[u8]) -> Result<Skimmed, ChunkError> {
        let mut out = Skimmed {
            consumed: 0,
            data: 0,
            done: self.is_done(),
        };
        while out.consumed < input.len() && !out.done {
            let d = self.decode(&input[out.consumed..])?;
            out.consumed += d.consumed;
            out.data += d.data.map_or(0, |r| r.len() as u64);
            out.done = d.done;
        }
        Ok(out)
    }
}

impl ChunkedDecoder {
    /// Decodes like [`skim`](Self::skim) and appends the data to `out` in
    /// canonical chunked framing: each data piece as `{size:x}\r\n{data}\r\n`
    /// (lowercase hex, no leading zeros), and `0\r\n\r\n` once the body
    /// ends; chunk extensions and trailers are dropped.
    ///
    /// A proxy forwards this instead of the client's bytes, so a backend
    /// whose chunk parser differs from ours (leading zeros, extensions, odd
    /// trailers) still frames the body exactly as we did: nothing can be
    /// smuggled through the difference.
    pub fn reencode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Skimmed, ChunkError> {
        let mut s = Skimmed {
            consumed: 0,
            data: 0,
            done: self.is_done(),
        };
        while s.consumed < input.len() && !s.done {
            let at = s.consumed;
            let d = self.decode(&input[at..])?;
            if let Some(r) = d.data {
                if let Some(bytes) = input.get(at + r.start..at + r.end) {
                    if !bytes.is_empty() {
                        write_chunk_size(out, bytes.len());
                        out.extend_from_slice(bytes);
                        out.extend_from_slice(b"\r\n");
                        s.data += bytes.len() as u64;
                    }
                }
            }
            s.consumed += d.consumed;
            s.done = d.done;
            if d.done {
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        Ok(s)
    }
}

/// Appends a chunk-size line, `{n:x}\r\n`.
pub fn write_chunk_size(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = HEX[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut avail = step.min(input.len());
        loop {
            let r = d.decode(&input[pos..avail])?;
            if let Some(range) = r.data {
                body.extend_from_slice(&input[pos + range.start..pos + range.end]);
            }
            pos += r.consumed;
            if r.done {
                return Ok((body, pos));
            }
            if pos == avail {
                if avail == input.len() {
                    return Err(ChunkError::InvalidSize); // incomplete
                }
                avail = (avail + step).min(input.len());
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n, worl\r\n1\r\nd\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, used) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello, world");
            assert_eq!(&input[used..], b"NEXT");
        }
    }

    #[test]
    fn skim_counts_data_and_stops_at_the_end() {
        let input = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1";
        let mut d = ChunkedDecoder::new();
        let first = d.skim(&input[..4]).unwrap();
        assert_eq!((first.consumed, first.data, first.done), (4, 1, false));
        let rest = d.skim(&input[4..]).unwrap();
        assert_eq!((rest.data, rest.done), (4, true));
        assert_eq!(&input[4 + rest.consumed..], b"GET / HTTP/1.1");
    }

    #[test]
    fn refuses_bad_framing() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::InvalidSize),
            (b"\r\n", ChunkError::InvalidSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"-1\r\n", ChunkError::InvalidSize),
            (b"10000000000000000\r\n", ChunkError::SizeOverflow),
            (
                b"000000000000000000000000000000000000010000000000000000\r\n",
                ChunkError::SizeOverflow,
            ),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5\r\nhelloX\r\n", ChunkError::BadLineEnding),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::BadLineEnding),
            (b"0\r\n\n", ChunkError::BadLineEnding),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input, input.len()).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn reencode_is_canonical_in_any_split() {
        let input = b"005\r\nhello\r\n6;ext=1\r\n, worl\r\n01\r\nd\r\n0000\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut data = 0;
            while !d.is_done() {
                let end = (pos + step).min(input.len());
                let s = d.reencode(&input[pos..end], &mut out).unwrap();
                pos += s.consumed;
                data += s.data;
            }
            assert_eq!(&input[pos..], b"NEXT");
            assert_eq!(data, 12);
            let (body, used) = decode_all(&out, out.len()).unwrap();
            assert_eq!((body.as_slice(), used), (&b"hello, world"[..], out.len()));
            if step == input.len() {
                assert_eq!(out, b"5\r\nhello\r\n6\r\n, worl\r\n1\r\nd\r\n0\r\n\r\n");
            }
        }
        let mut out = Vec::new();
        write_chunk_size(&mut out, 0x1a2b);
        assert_eq!(out, b"1a2b\r\n");
    }

    #[test]
    fn leading_zeros_are_not_digits_that_count() {
        // 33 zeros, then the size: RFC 9112 allows any number of HEXDIG.
        let input = format!("{}5\r\nhello\r\n{}\r\n\r\n", "0".repeat(33), "0".repeat(40));
        let (body, used) = decode_all(input.as_bytes(), input.len()).unwrap();
        assert_eq!((body.as_slice(), used), (&b"hello"[..], input.len()));
        // The largest value, after zeros.
        let max = format!("{}ffffffffffffffff\r\n", "0".repeat(100));
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(max.as_bytes()).is_ok());
        // A size field over the line limit is refused even if it is all zeros.
        let long = "0".repeat(usize::from(MAX_SIZE_DIGITS) + 1);
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(long.as_bytes()).unwrap_err(),
            ChunkError::SizeOverflow
        );
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_EXTENSION + 1));
        assert_eq!(
            decode_all(&long_ext, long_ext.len()).unwrap_err(),
            ChunkError::ExtensionTooLong
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..1000 {
            trailers.extend_from_slice(b"X-Trailer: 0123456789\r\n");
        }
        assert_eq!(
            decode_all(&trailers, trailers.len()).unwrap_err(),
            ChunkError::TrailersTooLarge
        );
    }
}
