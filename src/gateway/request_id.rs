//! Request ids: the client's `x-request-id` when it is a sane token,
//! otherwise a fresh UUID-shaped id.
//!
//! The id goes on every response and, once proxying lands, on to backends.
//! Generating one costs a few multiplications and sixteen table look-ups:
//! each worker draws a random prefix when it starts
//! (`xxxxxxxx-xxxx-4xxx-`, 48 random bits and the version nibble) and
//! numbers its requests; the counter goes through a bijective mix of 62 bits
//! so ids look random yet never repeat within a worker for 2^62 requests,
//! while the prefix keeps workers and restarts apart. Ids are for
//! correlation, not secrets. Randomness is an input ([`IdGenerator::new`]
//! takes the seed), so tests can fix it.

#![forbid(unsafe_code)]

/// Longest client-supplied id echoed back.
pub const MAX_CLIENT_ID: usize = 128;

/// Length of a generated id.
pub const ID_LEN: usize = 36;

/// A request id: the client's (borrowed from the request head) or generated.
#[derive(Clone, Copy)]
pub enum RequestId<'a> {
    /// The client's sane `x-request-id`.
    Client(&'a [u8]),
    /// A generated UUID-shaped id.
    Generated([u8; ID_LEN]),
}

impl RequestId<'_> {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(id) => id,
            RequestId::Generated(id) => id,
        }
    }
}

/// Per-worker id source.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    prefix: [u8; 19],
    counter: u64,
}

const MASK62: u64 = (1 << 62) - 1;

/// Two hex digits per byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

impl IdGenerator {
    /// A generator whose prefix comes from `seed` (use [`entropy_seed`]).
    pub fn new(seed: u64) -> IdGenerator {
        let r = Rng::new(seed).next_u64();
        let mut prefix = *b"00000000-0000-4000-";
        let bytes = r.to_be_bytes();
        put_hex(&mut prefix[0..8], &bytes[0..4]);
        put_hex(&mut prefix[9..13], &bytes[4..6]);
        // 12 more random bits after the version nibble.
        let tail = [bytes[6] & 0x0f, bytes[7]];
        put_hex(&mut prefix[14..18], &tail);
        prefix[14] = b'4';
        IdGenerator { prefix, counter: 0 }
    }

    /// The client's id if it is 1–128 bytes of `[A-Za-z0-9._:+/=-]`,
    /// otherwise a new one.
    pub fn from_client_or_new<'a>(&mut self, client: Option<&'a [u8]>) -> RequestId<'a> {
        match client {
            Some(id) if is_sane(id) => RequestId::Client(id),
            _ => RequestId::Generated(self.generate()),
        }
    }

    /// A new id: the prefix, the RFC 4122 variant, 62 mixed counter bits.
    pub fn generate(&mut self) -> [u8; ID_LEN] {
        self.counter = self.counter.wrapping_add(1);
        // Multiplication by an odd constant and xor-shift are both
        // bijections on 62 bits: distinct counters give distinct ids.
        let mut x = self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK62;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK62;
        x ^= x >> 32;
        let mut out = [0u8; ID_LEN];
        out[..19].copy_from_slice(&self.prefix);
        // 62 bits: 2 go into the variant nibble (8, 9, a, b), 60 into 15 hex digits.
        let variant = 8 + (x >> 60) as u8;
        out[19] = b"0123456789abcdef"[variant as usize];
        let low = x & ((1 << 60) - 1);
        let b = low.to_be_bytes(); // b[0] is 0..=0x0f
        out[20] = HEX_PAIRS[b[0] as usize][1];
        out[21..23].copy_from_slice(&HEX_PAIRS[b[1] as usize]);
        out[23] = b'-';
        for (i, byte) in b[2..].iter().enumerate() {
            out[24 + 2 * i..26 + 2 * i].copy_from_slice(&HEX_PAIRS[*byte as usize]);
        }
        out
    }
}

fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&HEX_PAIRS[*b as usize]);
    }
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID
        && id.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'/' | b'=' | b'-')
        })
}

/// A seed from the clock, the process and the address of a stack value:
/// distinct across workers and restarts.
pub fn entropy_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    t ^ addr.rotate_left(32) ^ u64::from(std::process::id()).rotate_left(16)
}

/// A small, fast, non-cryptographic generator (wyrand).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_sane_ids_and_replaces_others() {
        let mut ids = IdGenerator::new(1);
        let id = ids.from_client_or_new(Some(b"abc-123_x.y"));
        assert_eq!(id.as_bytes(), b"abc-123_x.y");
        for bad in [&b""[..], b"has space", b"semi;colon", &[b'a'; 129][..]] {
            let id = ids.from_client_or_new(Some(bad));
            assert_eq!(id.as_bytes().len(), ID_LEN);
        }
    }

    #[test]
    fn generates_uuid_shaped_unique_ids() {
        let mut ids = IdGenerator::new(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let id = ids.generate();
            let s = std::str::from_utf8(&id).unwrap();
            let parts: Vec<_> = s.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{s}"
            );
            assert!(parts[2].starts_with('4'), "{s}");
            assert!(
                matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{s}"
            );
            assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
            assert!(seen.insert(id), "duplicate id {s}");
        }
        // Another worker (another seed) has another prefix.
        let other = IdGenerator::new(43).generate();
        assert_ne!(other[..19], ids.generate()[..19]);
    }
}
