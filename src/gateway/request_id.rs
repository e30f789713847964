//! Request ids: the client's `x-request-id` when it is a sane token,
//! otherwise a random UUIDv4 formatted on the stack.
//!
//! The id goes on every response and, once proxying lands, on to backends.
//! Randomness is an input ([`Rng`] is seeded by the caller), so tests can
//! fix it.

/// Longest client-supplied id echoed back.
pub const MAX_CLIENT_ID: usize = 128;

/// A request id, stored inline.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; MAX_CLIENT_ID],
    len: u8,
}

impl RequestId {
    /// The client's id if it is 1–128 bytes of `[A-Za-z0-9._:+/=-]`,
    /// otherwise a fresh UUIDv4 from `rng`.
    pub fn from_client_or_new(client: Option<&[u8]>, rng: &mut Rng) -> RequestId {
        match client {
            Some(id) if is_sane(id) => {
                let mut buf = [0u8; MAX_CLIENT_ID];
                buf[..id.len()].copy_from_slice(id);
                RequestId {
                    buf,
                    len: id.len() as u8,
                }
            }
            _ => RequestId::generate(rng),
        }
    }

    /// A random UUIDv4, e.g. `3f2b8c1e-9a4d-4e2f-8b6a-0c1d2e3f4a5b`.
    pub fn generate(rng: &mut Rng) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hi = rng.next_u64();
        let lo = rng.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_le_bytes());
        bytes[8..].copy_from_slice(&lo.to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let mut buf = [0u8; MAX_CLIENT_ID];
        let mut j = 0;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                buf[j] = b'-';
                j += 1;
            }
            buf[j] = HEX[(b >> 4) as usize];
            buf[j + 1] = HEX[(b & 0xf) as usize];
            j += 2;
        }
        RequestId { buf, len: 36 }
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'/' | b'=' | b'-'))
}

/// A small, fast, non-cryptographic generator (wyrand). Request ids need
/// uniqueness, not secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the clock, the thread and the address of a
    /// stack value: distinct across workers and restarts.
    pub fn from_entropy() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        let mut r = Rng(t ^ addr.rotate_left(32) ^ u64::from(std::process::id()));
        r.next_u64();
        r
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
        let mut rng = Rng::new(1);
        let id = RequestId::from_client_or_new(Some(b"abc-123_x.y"), &mut rng);
        assert_eq!(id.as_bytes(), b"abc-123_x.y");
        for bad in [&b""[..], b"has space", b"semi;colon", &[b'a'; 129][..]] {
            let id = RequestId::from_client_or_new(Some(bad), &mut rng);
            assert_eq!(id.as_bytes().len(), 36);
        }
    }

    #[test]
    fn generates_uuid_v4() {
        let mut rng = Rng::new(42);
        let a = RequestId::generate(&mut rng);
        let b = RequestId::generate(&mut rng);
        assert_ne!(a.as_bytes(), b.as_bytes());
        let s = std::str::from_utf8(a.as_bytes()).unwrap();
        let parts: Vec<_> = s.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }
}
