//! Route table: maps `(method, request path)` to a [`RouteId`] with AWS API
//! Gateway routing semantics.
//!
//! # What this module owns
//!
//! The compiled route table of one configuration and nothing else: parsing and
//! validating path templates, detecting conflicting routes, and matching a
//! request against the table. It does not know what a route *does*; callers
//! keep their integrations in their own table indexed by [`RouteId`].
//!
//! # Key types
//!
//! * [`RouteTableBuilder`] — collects routes (`add`, `set_default`) and
//!   validates each one as it is added, returning a typed [`RouteError`].
//! * [`RouteTable`] — the immutable, `Send + Sync` result of
//!   [`RouteTableBuilder::build`]; share it between worker threads (e.g. in an
//!   `Arc`) and call [`RouteTable::lookup`] per request.
//! * [`Params`] — path parameters of a match, as `(name, value)` slices that
//!   borrow the table (names) and the request path (values). Fixed capacity
//!   [`MAX_PARAMS`]; it never allocates.
//! * [`Method`] / [`MethodSpec`] — the seven methods API Gateway's `ANY`
//!   covers, and "one method or `ANY`" for route definitions.
//!
//! # How it is used
//!
//! ```ignore
//! let mut b = RouteTableBuilder::new();
//! b.add(MethodSpec::One(Method::Get), "/pets/{id}", RouteId(1))?;
//! b.add(MethodSpec::Any, "/{proxy+}", RouteId(2))?;
//! b.set_default(RouteId(0))?;
//! let table = b.build();
//!
//! let mut params = Params::new();
//! assert_eq!(table.lookup(Method::Get, "/pets/7", &mut params), Some(RouteId(1)));
//! assert_eq!(params.get("id"), Some("7"));
//! ```
//!
//! # Templates
//!
//! A template starts with `/` and is made of `/`-separated segments. A segment
//! is a literal (ASCII alphanumerics and `_ - . , : ~ @ ! $ & ' ( ) * + ; =`),
//! a parameter `{name}` (name is `[A-Za-z0-9_]+`), or a greedy parameter
//! `{name+}`, which must be the last segment. Parameters are whole segments,
//! names are unique within a template, there is no trailing slash (except the
//! root template `/`) and no empty segment. Parameter names do not make a
//! resource: `/a/{id}` and `/a/{x}` are the same resource, and each route
//! reports its own names.
//!
//! # Precedence
//!
//! At every level a literal segment beats `{param}`, which beats `{greedy+}`.
//! When a more specific branch fails deeper down, matching backtracks to the
//! next less specific one. A resource only matches if it has a handler for
//! the request method: an explicit one, else its `ANY` route. If nothing
//! matches, the `$default` route (if set) is returned. With routes
//! `GET /pets/dog/1`, `GET /pets/dog/{id}`, `GET /pets/{proxy+}`,
//! `ANY /{proxy+}` and `$default`:
//!
//! | request            | route                                |
//! |--------------------|--------------------------------------|
//! | `GET /pets/dog/1`  | `GET /pets/dog/1`                    |
//! | `GET /pets/dog/2`  | `GET /pets/dog/{id}` (`id=2`)        |
//! | `GET /pets/cat/1`  | `GET /pets/{proxy+}` (`proxy=cat/1`) |
//! | `POST /test/5`     | `ANY /{proxy+}` (`proxy=test/5`)     |
//! | `GET /`            | `$default` (greedy needs ≥1 segment) |
//!
//! # Request paths
//!
//! `lookup` takes the path without the query string. One trailing slash is
//! ignored (`/pets/` matches `/pets`); `/` is the root. An empty segment
//! (`/a//b`) never matches a literal or `{param}`, though a greedy parameter
//! may span it. A greedy value is the rest of the path without its leading
//! slash (`/pets/{proxy+}` on `/pets/a/b` gives `proxy=a/b`) and is never
//! empty. Matching is byte-exact and case-sensitive, and **no
//! percent-decoding is done**: the caller decides whether to decode before
//! lookup (templates cannot contain `%`) or to decode parameter values
//! afterwards. A path that does not start with `/` matches no route (only
//! `$default`).
//!
//! # Cost on the hot path
//!
//! `lookup` allocates nothing: it recurses on the stack, at most one frame per
//! template segment (templates are capped at [`MAX_SEGMENTS`]), and writes
//! parameters into the caller's fixed-size [`Params`]. A node's literal
//! children are scanned linearly when there are few of them and looked up in
//! an `AHashMap` above a small threshold, so cost stays flat as the table
//! grows. Each tree node is visited at most once per lookup (a node sits at a
//! fixed depth and consumes a fixed number of segments), so backtracking is
//! bounded by the size of the tree, not exponential.
//!
//! # How it fails
//!
//! All errors are reported when a route is added, as a [`RouteError`] naming
//! the template and what to change. `build` and `lookup` cannot fail; a
//! lookup that matches nothing returns `$default` or `None`.

#![forbid(unsafe_code)]

use std::fmt;

use ahash::AHashMap;

/// Most path parameters a single template may declare (and so the capacity of
/// [`Params`]).
pub const MAX_PARAMS: usize = 16;

/// Most segments a single template may have; bounds the recursion depth of
/// [`RouteTable::lookup`].
pub const MAX_SEGMENTS: usize = 128;

/// A node with more literal children than this gets a hash map instead of a
/// linear scan.
const LINEAR_SCAN_MAX: usize = 8;

/// The seven methods API Gateway's `ANY` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
}

impl Method {
    /// All methods, in declaration order.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
    ];

    /// Parses a method token exactly and case-sensitively (`b"GET"`, ...).
    /// Returns `None` for anything else, including `CONNECT`, `TRACE` and
    /// extension methods.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        match b {
            b"GET" => Some(Method::Get),
            b"HEAD" => Some(Method::Head),
            b"POST" => Some(Method::Post),
            b"PUT" => Some(Method::Put),
            b"DELETE" => Some(Method::Delete),
            b"PATCH" => Some(Method::Patch),
            b"OPTIONS" => Some(Method::Options),
            _ => None,
        }
    }

    /// The method token as sent on the wire (`"GET"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The method part of a route definition: one method, or `ANY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodSpec {
    /// Matches every [`Method`] not declared explicitly on the same resource.
    Any,
    /// Matches exactly this method.
    One(Method),
}

impl fmt::Display for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodSpec::Any => f.write_str("ANY"),
            MethodSpec::One(m) => f.write_str(m.as_str()),
        }
    }
}

/// Caller-chosen identifier of a route, returned by [`RouteTable::lookup`].
/// Several routes may share an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u32);

/// Path parameters of a match: `(name, value)` pairs where names borrow the
/// [`RouteTable`] (`'t`) and values are slices of the request path (`'p`).
/// Fixed capacity [`MAX_PARAMS`], no allocation. Pairs are in template order.
#[derive(Clone, Copy)]
pub struct Params<'t, 'p> {
    entries: [(&'t str, &'p str); MAX_PARAMS],
    len: usize,
}

impl<'t, 'p> Params<'t, 'p> {
    /// An empty set of parameters. Does not allocate.
    #[must_use]
    pub const fn new() -> Self {
        Params {
            entries: [("", ""); MAX_PARAMS],
            len: 0,
        }
    }

    /// The value of the parameter `name`, if the matched route declares it.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.entries[..self.len]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// The `(name, value)` pairs, in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'t str, &'p str)> + '_ {
        self.entries[..self.len].iter().copied()
    }

    /// Number of parameters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no parameters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes all parameters.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Pushes a value with a placeholder name; `false` if full.
    fn push_value(&mut self, value: &'p str) -> bool {
        if self.len == MAX_PARAMS {
            return false;
        }
        self.entries[self.len] = ("", value);
        self.len += 1;
        true
    }
}

impl Default for Params<'_, '_> {
    fn default() -> Self {
        Params::new()
    }
}

impl fmt::Debug for Params<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Why a route could not be added. Every variant names the offending template
/// (or route) so the message can be acted on directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The template is the empty string; use `/` for the root resource.
    EmptyPath,
    /// The template does not start with `/`.
    NoLeadingSlash {
        /// The template as given.
        path: String,
    },
    /// The template ends with `/` (only the root template `/` may).
    TrailingSlash {
        /// The template as given.
        path: String,
    },
    /// The template contains an empty segment (`//`).
    EmptySegment {
        /// The template as given.
        path: String,
    },
    /// A segment is neither a valid literal nor a valid `{param}`/`{param+}`.
    BadSegment {
        /// The template as given.
        path: String,
        /// The offending segment.
        segment: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A greedy parameter `{name+}` is followed by more segments.
    GreedyNotLast {
        /// The template as given.
        path: String,
        /// The greedy segment.
        segment: String,
    },
    /// The same parameter name appears twice in one template.
    DuplicateParam {
        /// The template as given.
        path: String,
        /// The repeated name.
        name: String,
    },
    /// The template declares more than [`MAX_PARAMS`] parameters.
    TooManyParams {
        /// The template as given.
        path: String,
    },
    /// The template has more than [`MAX_SEGMENTS`] segments.
    TooDeep {
        /// The template as given.
        path: String,
    },
    /// A route with the same method (or `ANY`) already exists on the same
    /// resource. Parameter names do not distinguish resources.
    Conflict {
        /// Method of the rejected route.
        method: MethodSpec,
        /// Template of the rejected route.
        path: String,
        /// Template of the route already there.
        existing_path: String,
        /// Id of the route already there.
        existing: RouteId,
    },
    /// [`RouteTableBuilder::set_default`] was called twice.
    DefaultTwice {
        /// The `$default` route already set.
        existing: RouteId,
        /// The `$default` route rejected.
        new: RouteId,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::EmptyPath => {
                f.write_str("route path is empty; use \"/\" for the root resource")
            }
            RouteError::NoLeadingSlash { path } => {
                write!(f, "route path {path:?} must start with '/'")
            }
            RouteError::TrailingSlash { path } => write!(
                f,
                "route path {path:?} ends with '/'; remove it (requests with a trailing slash match anyway)"
            ),
            RouteError::EmptySegment { path } => {
                write!(f, "route path {path:?} has an empty segment (\"//\"); remove it")
            }
            RouteError::BadSegment { path, segment, why } => {
                write!(f, "route path {path:?}: segment {segment:?} {why}")
            }
            RouteError::GreedyNotLast { path, segment } => write!(
                f,
                "route path {path:?}: greedy parameter {segment:?} must be the last segment"
            ),
            RouteError::DuplicateParam { path, name } => write!(
                f,
                "route path {path:?} uses parameter name {name:?} more than once; rename one"
            ),
            RouteError::TooManyParams { path } => write!(
                f,
                "route path {path:?} has more than {MAX_PARAMS} parameters"
            ),
            RouteError::TooDeep { path } => write!(
                f,
                "route path {path:?} has more than {MAX_SEGMENTS} segments"
            ),
            RouteError::Conflict {
                method,
                path,
                existing_path,
                existing,
            } => write!(
                f,
                "route {method} {path:?} conflicts with route {} ({method} {existing_path:?}): \
                 same method on the same resource (parameter names do not distinguish resources)",
                existing.0
            ),
            RouteError::DefaultTwice { existing, new } => write!(
                f,
                "$default route set twice (already route {}, now route {}); keep one",
                existing.0, new.0
            ),
        }
    }
}

impl std::error::Error for RouteError {}

/// One parsed template segment.
enum Seg<'a> {
    Literal(&'a str),
    Param(&'a str),
    Greedy(&'a str),
}

fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-'
                | b'.'
                | b','
                | b':'
                | b'~'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b';'
                | b'='
        )
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses and validates a template into segments (the root `/` has none).
fn parse_template(path: &str) -> Result<Vec<Seg<'_>>, RouteError> {
    let owned = || path.to_string();
    if path.is_empty() {
        return Err(RouteError::EmptyPath);
    }
    if !path.starts_with('/') {
        return Err(RouteError::NoLeadingSlash { path: owned() });
    }
    if path == "/" {
        return Ok(Vec::new());
    }
    if path.ends_with('/') {
        return Err(RouteError::TrailingSlash { path: owned() });
    }
    let mut segs = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for raw in path[1..].split('/') {
        if raw.is_empty() {
            return Err(RouteError::EmptySegment { path: owned() });
        }
        if let Some(Seg::Greedy(name)) = segs.last() {
            return Err(RouteError::GreedyNotLast {
                path: owned(),
                segment: format!("{{{name}+}}"),
            });
        }
        if segs.len() == MAX_SEGMENTS {
            return Err(RouteError::TooDeep { path: owned() });
        }
        let bad = |why: &'static str| RouteError::BadSegment {
            path: owned(),
            segment: raw.to_string(),
            why,
        };
        let seg = if let Some(inner) = raw.strip_prefix('{') {
            let inner = inner.strip_suffix('}').ok_or_else(|| {
                bad("opens '{' but does not end with '}'; parameters are whole segments like {id}")
            })?;
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if name.is_empty() {
                return Err(bad("has an empty parameter name; write {name} or {name+}"));
            }
            if !name.bytes().all(is_name_byte) {
                return Err(bad(
                    "has an invalid parameter name; use only A-Z, a-z, 0-9 and '_'",
                ));
            }
            if names.contains(&name) {
                return Err(RouteError::DuplicateParam {
                    path: owned(),
                    name: name.to_string(),
                });
            }
            names.push(name);
            if names.len() > MAX_PARAMS {
                return Err(RouteError::TooManyParams { path: owned() });
            }
            if greedy {
                Seg::Greedy(name)
            } else {
                Seg::Param(name)
            }
        } else if raw.contains(['{', '}']) {
            return Err(bad(
                "mixes text and braces; parameters must be whole segments like /{id}",
            ));
        } else if !raw.bytes().all(is_literal_byte) {
            return Err(bad(
                "has a character not allowed in a path literal; use ASCII letters, digits and _ - . , : ~ @ ! $ & ' ( ) * + ; =",
            ));
        } else {
            Seg::Literal(raw)
        };
        segs.push(seg);
    }
    Ok(segs)
}

/// Index of a route in `routes`, per method and for `ANY`.
#[derive(Clone, Copy, Default)]
struct Handlers {
    by_method: [Option<u32>; 7],
    any: Option<u32>,
}

impl Handlers {
    #[inline]
    fn get(&self, m: Method) -> Option<u32> {
        self.by_method[m.index()].or(self.any)
    }

    fn slot(&mut self, spec: MethodSpec) -> &mut Option<u32> {
        match spec {
            MethodSpec::Any => &mut self.any,
            MethodSpec::One(m) => &mut self.by_method[m.index()],
        }
    }
}

/// A route as stored: its id, its parameter names in template order, and the
/// template and method it was declared with (for error messages).
struct Route {
    id: RouteId,
    names: Box<[Box<str>]>,
    method: MethodSpec,
    template: Box<str>,
}

#[derive(Default)]
struct BuildNode {
    literals: Vec<(Box<str>, u32)>,
    param: Option<u32>,
    greedy: Option<u32>,
    handlers: Handlers,
}

/// Collects and validates routes; [`build`](RouteTableBuilder::build) turns
/// them into a [`RouteTable`].
pub struct RouteTableBuilder {
    nodes: Vec<BuildNode>,
    routes: Vec<Route>,
    default: Option<RouteId>,
}

impl Default for RouteTableBuilder {
    fn default() -> Self {
        RouteTableBuilder::new()
    }
}

impl RouteTableBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> Self {
        RouteTableBuilder {
            nodes: vec![BuildNode::default()],
            routes: Vec::new(),
            default: None,
        }
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(BuildNode::default());
        (self.nodes.len() - 1) as u32
    }

    /// Adds a route. `path` is a template like `"/pets/{id}/toys/{proxy+}"`;
    /// `"/"` is the root resource.
    ///
    /// # Errors
    ///
    /// A template error ([`RouteError::EmptyPath`], `NoLeadingSlash`,
    /// `TrailingSlash`, `EmptySegment`, `BadSegment`, `GreedyNotLast`,
    /// `DuplicateParam`, `TooManyParams`, `TooDeep`) if the template is
    /// invalid, or [`RouteError::Conflict`] if the same method (or `ANY`) is
    /// already routed on the same resource. On error, routing is unchanged.
    pub fn add(&mut self, method: MethodSpec, path: &str, id: RouteId) -> Result<(), RouteError> {
        let segs = parse_template(path)?;
        let mut node = 0u32;
        let mut names = Vec::new();
        for seg in &segs {
            let n = node as usize;
            node = match *seg {
                Seg::Literal(lit) => {
                    match self.nodes[n].literals.iter().find(|(l, _)| &**l == lit) {
                        Some(&(_, child)) => child,
                        None => {
                            let child = self.new_node();
                            self.nodes[n].literals.push((lit.into(), child));
                            child
                        }
                    }
                }
                Seg::Param(name) => {
                    names.push(Box::<str>::from(name));
                    match self.nodes[n].param {
                        Some(child) => child,
                        None => {
                            let child = self.new_node();
                            self.nodes[n].param = Some(child);
                            child
                        }
                    }
                }
                Seg::Greedy(name) => {
                    names.push(Box::<str>::from(name));
                    match self.nodes[n].greedy {
                        Some(child) => child,
                        None => {
                            let child = self.new_node();
                            self.nodes[n].greedy = Some(child);
                            child
                        }
                    }
                }
            };
        }
        let route_index = self.routes.len() as u32;
        let slot = self.nodes[node as usize].handlers.slot(method);
        if let Some(existing) = *slot {
            let existing = &self.routes[existing as usize];
            return Err(RouteError::Conflict {
                method,
                path: path.to_string(),
                existing_path: existing.template.to_string(),
                existing: existing.id,
            });
        }
        *slot = Some(route_index);
        self.routes.push(Route {
            id,
            names: names.into_boxed_slice(),
            method,
            template: path.into(),
        });
        Ok(())
    }

    /// Sets the `$default` route, returned when no other route matches.
    ///
    /// # Errors
    ///
    /// [`RouteError::DefaultTwice`] if it was already set.
    pub fn set_default(&mut self, id: RouteId) -> Result<(), RouteError> {
        if let Some(existing) = self.default {
            return Err(RouteError::DefaultTwice { existing, new: id });
        }
        self.default = Some(id);
        Ok(())
    }

    /// Compiles the routes into an immutable [`RouteTable`].
    #[must_use]
    pub fn build(self) -> RouteTable {
        let nodes = self
            .nodes
            .into_iter()
            .map(|n| Node {
                literals: if n.literals.len() > LINEAR_SCAN_MAX {
                    Literals::Many(n.literals.into_iter().collect())
                } else {
                    Literals::Few(n.literals.into_boxed_slice())
                },
                param: n.param,
                greedy: n.greedy,
                handlers: n.handlers,
            })
            .collect();
        RouteTable {
            nodes,
            routes: self.routes.into_boxed_slice(),
            default: self.default,
        }
    }
}

enum Literals {
    Few(Box<[(Box<str>, u32)]>),
    Many(AHashMap<Box<str>, u32>),
}

impl Literals {
    #[inline]
    fn get(&self, seg: &str) -> Option<u32> {
        match self {
            Literals::Few(v) => v.iter().find(|(l, _)| &**l == seg).map(|&(_, c)| c),
            Literals::Many(m) => m.get(seg).copied(),
        }
    }
}

struct Node {
    literals: Literals,
    param: Option<u32>,
    greedy: Option<u32>,
    handlers: Handlers,
}

/// The compiled, immutable route table (`Send + Sync`). See the module docs
/// for the matching rules.
pub struct RouteTable {
    nodes: Box<[Node]>,
    routes: Box<[Route]>,
    default: Option<RouteId>,
}

impl RouteTable {
    /// Finds the route for `method` and `path` (the request path without its
    /// query string; not percent-decoded). On a match, fills `params` with the
    /// route's parameters (values are slices of `path`) and returns its id;
    /// otherwise returns the `$default` route or `None`, with `params` empty.
    /// Never allocates.
    pub fn lookup<'t, 'p>(
        &'t self,
        method: Method,
        path: &'p str,
        params: &mut Params<'t, 'p>,
    ) -> Option<RouteId> {
        params.clear();
        if !path.starts_with('/') {
            return self.default;
        }
        // "/" is the root (no segments); otherwise drop one trailing slash.
        let rest = if path == "/" {
            ""
        } else {
            path.strip_suffix('/').unwrap_or(path)
        };
        match self.walk(0, method, rest, params) {
            Some(route) => {
                for (entry, name) in params.entries[..params.len]
                    .iter_mut()
                    .zip(route.names.iter())
                {
                    entry.0 = name;
                }
                Some(route.id)
            }
            None => {
                params.clear();
                self.default
            }
        }
    }

    /// Matches `rest` (empty, or `/seg...`) below `node`. Pushes parameter
    /// values onto `params` on the way down; on failure leaves `params` as it
    /// found it.
    fn walk<'t, 'p>(
        &'t self,
        node: u32,
        method: Method,
        rest: &'p str,
        params: &mut Params<'t, 'p>,
    ) -> Option<&'t Route> {
        let n = &self.nodes[node as usize];
        if rest.is_empty() {
            return n.handlers.get(method).map(|r| &self.routes[r as usize]);
        }
        // `rest` starts with '/'.
        let tail = &rest[1..];
        // A plain byte loop: `str::find`'s searcher costs more than the
        // short segments of a path.
        let (seg, next) = match tail.as_bytes().iter().position(|&b| b == b'/') {
            Some(i) => (&tail[..i], &tail[i..]),
            None => (tail, ""),
        };
        if !seg.is_empty() {
            if let Some(child) = n.literals.get(seg) {
                if let Some(r) = self.walk(child, method, next, params) {
                    return Some(r);
                }
            }
            if let Some(child) = n.param {
                if params.push_value(seg) {
                    if let Some(r) = self.walk(child, method, next, params) {
                        return Some(r);
                    }
                    params.len -= 1;
                }
            }
        }
        if let Some(g) = n.greedy {
            if !tail.is_empty() {
                if let Some(r) = self.nodes[g as usize].handlers.get(method) {
                    if params.push_value(tail) {
                        return Some(&self.routes[r as usize]);
                    }
                }
            }
        }
        None
    }

    /// Number of routes added (excluding `$default`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route was added (a `$default` route may still be set).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The `$default` route, if set.
    #[must_use]
    pub fn default_route(&self) -> Option<RouteId> {
        self.default
    }

    /// The method and template a route was declared with, by insertion order
    /// (for diagnostics and logging).
    pub fn routes(&self) -> impl Iterator<Item = (MethodSpec, &str, RouteId)> + '_ {
        self.routes.iter().map(|r| (r.method, &*r.template, r.id))
    }
}

#[cfg(test)]
mod tests;
