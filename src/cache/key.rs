//! Cache keys: the bytes a request is cached under and their 128-bit hash.
//!
//! [`KeyBuilder`] writes the key fields (namespace, method, then each
//! configured cache key parameter) into a reused buffer with a length prefix
//! on every field, so the encoding is injective: `("ab", "c")` and
//! `("a", "bc")` differ, and a missing parameter differs from an empty one.
//! [`CacheKey`] is the 128-bit hash of those bytes; the store is keyed by it
//! and the [`Entry`](super::Entry) keeps the full bytes so a hash collision is
//! detected, never served.
//!
//! The hash uses two ahash states with fixed seeds: it is stable for the life
//! of the process, which is all an in-memory cache needs. The store's table
//! uses [`PassThrough`] so a lookup does not hash the key a second time.

#![forbid(unsafe_code)]

use std::hash::{BuildHasher, Hash, Hasher};

use ahash::RandomState;

/// Seeds of the first 64-bit half of [`CacheKey`]: splitmix64 outputs from
/// the seed `"Ringgate"`. They must not equal ahash's own constants (`PI`,
/// `PI2`): `with_seeds` XORs with `PI2`, and a zero key hashes everything
/// to 0 (the `halves_are_well_mixed` test guards this).
const SEEDS_A: [u64; 4] = [
    0x67c2_b409_1e28_c2d3,
    0x919c_81ff_19f7_20be,
    0xa7ea_d4ae_2a4b_21bd,
    0x13e2_2fd6_1046_e7dd,
];
/// Seeds of the second 64-bit half of [`CacheKey`] (the word the table and
/// its shard choice use).
const SEEDS_B: [u64; 4] = [
    0x8dd4_ed22_37bc_7fac,
    0xe35a_6cc2_bfaf_f1be,
    0xba54_ff16_5c66_f70e,
    0x1fdb_841e_c993_ea18,
];

/// The 128-bit hash of a request's cache key bytes.
///
/// Two requests with equal key bytes always get equal `CacheKey`s within a
/// process. Distinct bytes collide with probability about 2^-128; the store
/// still compares the full bytes on every hit (see [`Entry::key`](super::Entry::key)).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey(u128);

impl CacheKey {
    /// Hashes `bytes` (as produced by [`KeyBuilder::bytes`]).
    pub fn of(bytes: &[u8]) -> Self {
        let a = RandomState::with_seeds(SEEDS_A[0], SEEDS_A[1], SEEDS_A[2], SEEDS_A[3]);
        let b = RandomState::with_seeds(SEEDS_B[0], SEEDS_B[1], SEEDS_B[2], SEEDS_B[3]);
        let hi = a.hash_one(bytes);
        let lo = b.hash_one(bytes);
        Self((u128::from(hi) << 64) | u128::from(lo))
    }

    /// Wraps a raw 128-bit value; for tests and for keys carried in logs.
    pub const fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    /// The raw 128-bit value, e.g. to print the key in a log line.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl Hash for CacheKey {
    /// Feeds one well-mixed 64-bit word: with the store's pass-through
    /// hasher that word is the table hash itself.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 as u64);
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({:032x})", self.0)
    }
}

/// A `BuildHasher` whose hash of a [`CacheKey`] is the key's own low 64 bits:
/// the key already is a hash, so the table does not hash it again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// The hasher built by [`PassThrough`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Never reached for [`CacheKey`]; mixes the bytes (FNV-1a) so another
    /// type still hashes correctly rather than panicking.
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Where a cache key parameter comes from (`cacheKeyParameters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// `method.request.path.X`.
    Path,
    /// `method.request.querystring.X`.
    Query,
    /// `method.request.header.X`.
    Header,
    /// The whole query string as one value (the name is usually empty).
    WholeQuery,
    /// A request header a stored response varies on (its `Vary`, RFC 9111
    /// §4.1): appended to a URL's key to select one variant.
    Vary,
}

impl ParamKind {
    /// The tag byte written before the parameter.
    const fn tag(self) -> u8 {
        match self {
            ParamKind::Path => 1,
            ParamKind::Query => 2,
            ParamKind::Header => 3,
            ParamKind::WholeQuery => 4,
            ParamKind::Vary => 5,
        }
    }

    /// The name used in logs and configuration errors.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParamKind::Path => "path",
            ParamKind::Query => "querystring",
            ParamKind::Header => "header",
            ParamKind::WholeQuery => "whole-querystring",
            ParamKind::Vary => "vary",
        }
    }
}

/// Writes a request's cache key into a reused buffer.
///
/// Use one per worker (or per connection): after the first few requests the
/// buffer has grown to the largest key and building a key allocates nothing.
///
/// Encoding: `varint(len) namespace varint(len) method`, then per parameter
/// `tag varint(len) name` followed by `0` (missing) or
/// `1 varint(len) value` (present). The stage is implicit: there is one
/// cache per stage. Names and values are used as given; the caller decides
/// case and decoding (header names from the configuration, values raw).
#[derive(Debug, Default)]
pub struct KeyBuilder {
    buf: Vec<u8>,
}

impl KeyBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The builder's buffer, for a pool to lend or take back its memory.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Starts a new key for `namespace` (the cache namespace, by default the
    /// resource id) and the HTTP `method`, discarding the previous key.
    pub fn start(&mut self, namespace: &str, method: &str) {
        self.buf.clear();
        self.field(namespace.as_bytes());
        self.field(method.as_bytes());
    }

    /// Appends one cache key parameter; `None` means the request lacks it,
    /// which is a different key from `Some(b"")`.
    pub fn param(&mut self, kind: ParamKind, name: &str, value: Option<&[u8]>) {
        self.buf.push(kind.tag());
        self.field(name.as_bytes());
        match value {
            None => self.buf.push(0),
            Some(v) => {
                self.buf.push(1);
                self.field(v);
            }
        }
    }

    /// The hash of the key built so far.
    pub fn finish(&self) -> CacheKey {
        CacheKey::of(&self.buf)
    }

    /// Drops what was appended after the first `len` bytes (back to a key
    /// built earlier, e.g. a URL's key before its `Vary` parameters).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// The key bytes built so far (copy them into the [`Entry`](super::Entry)
    /// when storing a response).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// [`KeyBuilder::param`] with a present value given as `parts` joined
    /// by `sep` (the same bytes as the joined value, without building it):
    /// a query string with one parameter left out, for instance.
    pub fn param_joined<'a>(
        &mut self,
        kind: ParamKind,
        name: &str,
        parts: impl Iterator<Item = &'a str> + Clone,
        sep: u8,
    ) {
        self.buf.push(kind.tag());
        self.field(name.as_bytes());
        self.buf.push(1);
        let (count, bytes) = parts
            .clone()
            .fold((0usize, 0usize), |(n, b), p| (n + 1, b + p.len()));
        self.length(bytes + count.saturating_sub(1));
        for (i, p) in parts.enumerate() {
            if i > 0 {
                self.buf.push(sep);
            }
            self.buf.extend_from_slice(p.as_bytes());
        }
    }

    /// Writes `bytes` with a LEB128 length prefix.
    fn field(&mut self, bytes: &[u8]) {
        self.length(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Writes a LEB128 length.
    fn length(&mut self, len: usize) {
        let mut len = len as u64;
        loop {
            let low = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.buf.push(low);
                break;
            }
            self.buf.push(low | 0x80);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(build: impl FnOnce(&mut KeyBuilder)) -> (Vec<u8>, CacheKey) {
        let mut b = KeyBuilder::new();
        build(&mut b);
        (b.bytes().to_vec(), b.finish())
    }

    #[test]
    fn joined_params_match_the_joined_value() {
        let (a, _) = key(|b| {
            b.start("res", "GET");
            b.param(ParamKind::WholeQuery, "", Some(b"a=1&b=2"));
        });
        let (c, _) = key(|b| {
            b.start("res", "GET");
            b.param_joined(ParamKind::WholeQuery, "", "a=1&b=2".split('&'), b'&');
        });
        assert_eq!(a, c);
        let (e, _) = key(|b| {
            b.start("res", "GET");
            b.param(ParamKind::WholeQuery, "", Some(b""));
        });
        let (f, _) = key(|b| {
            b.start("res", "GET");
            b.param_joined(ParamKind::WholeQuery, "", std::iter::empty(), b'&');
        });
        assert_eq!(e, f);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let (a, ka) = key(|b| {
            b.start("res", "GET");
            b.param(ParamKind::Query, "ab", Some(b"c"));
        });
        let (c, kc) = key(|b| {
            b.start("res", "GET");
            b.param(ParamKind::Query, "a", Some(b"bc"));
        });
        assert_ne!(a, c);
        assert_ne!(ka, kc);
        let (n1, _) = key(|b| b.start("resG", "ET"));
        let (n2, _) = key(|b| b.start("res", "GET"));
        assert_ne!(n1, n2);
    }

    #[test]
    fn missing_differs_from_empty() {
        let (m, km) = key(|b| {
            b.start("r", "GET");
            b.param(ParamKind::Header, "x-tenant", None);
        });
        let (e, ke) = key(|b| {
            b.start("r", "GET");
            b.param(ParamKind::Header, "x-tenant", Some(b""));
        });
        assert_ne!(m, e);
        assert_ne!(km, ke);
    }

    #[test]
    fn method_and_kind_are_in_the_key() {
        let (_, get) = key(|b| b.start("r", "GET"));
        let (_, post) = key(|b| b.start("r", "POST"));
        assert_ne!(get, post);
        let (_, path) = key(|b| {
            b.start("r", "GET");
            b.param(ParamKind::Path, "id", Some(b"1"));
        });
        let (_, query) = key(|b| {
            b.start("r", "GET");
            b.param(ParamKind::Query, "id", Some(b"1"));
        });
        assert_ne!(path, query);
    }

    #[test]
    fn shared_namespace_shares_the_key_and_builder_is_reusable() {
        let mut b = KeyBuilder::new();
        b.start("shared-ns", "GET");
        b.param(ParamKind::Query, "type", Some(b"admin"));
        let first = (b.bytes().to_vec(), b.finish());
        // A different request in between must not leak into the next key.
        b.start("other", "GET");
        b.param(ParamKind::Path, "long-name", Some(&[7u8; 300]));
        b.start("shared-ns", "GET");
        b.param(ParamKind::Query, "type", Some(b"admin"));
        assert_eq!(first, (b.bytes().to_vec(), b.finish()));
        assert_eq!(first.1, CacheKey::of(&first.0));
    }

    #[test]
    fn long_fields_use_multi_byte_lengths() {
        let long = vec![b'x'; 200];
        let (bytes, _) = key(|b| {
            b.start("", "");
            b.param(ParamKind::WholeQuery, "", Some(&long));
        });
        // "" "" tag "" present len(200)=2 bytes + 200
        assert_eq!(bytes.len(), 1 + 1 + 1 + 1 + 1 + 2 + 200);
        assert_eq!(&bytes[5..7], &[0xc8, 0x01]);
    }

    #[test]
    fn halves_are_well_mixed() {
        // Both halves vary with the input, and the bits quick_cache picks
        // shards from (bit 32 up, in the low word) spread evenly.
        let mut b = KeyBuilder::new();
        let mut shards = [0u32; 8];
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096u32 {
            b.start("res", "GET");
            b.param(ParamKind::Path, "id", Some(i.to_string().as_bytes()));
            let raw = b.finish().as_u128();
            assert!(seen.insert((raw >> 64) as u64));
            assert!(seen.insert(raw as u64));
            shards[((raw as u64).rotate_right(32) & 7) as usize] += 1;
        }
        for n in shards {
            assert!((412..=612).contains(&n), "{shards:?}");
        }
    }

    #[test]
    fn pass_through_uses_the_key_word() {
        let k = CacheKey::from_u128(0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
        assert_eq!(PassThrough.hash_one(k), 0x0fed_cba9_8765_4321);
        assert_eq!(k.as_u128() as u64, 0x0fed_cba9_8765_4321);
    }
}
