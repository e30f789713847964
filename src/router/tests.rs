//! Unit tests of the route table: precedence tables, errors, params, paths.

#![forbid(unsafe_code)]

use super::*;

const GET: MethodSpec = MethodSpec::One(Method::Get);

fn table(routes: &[(MethodSpec, &str, u32)], default: Option<u32>) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for &(m, p, id) in routes {
        b.add(m, p, RouteId(id)).unwrap();
    }
    if let Some(d) = default {
        b.set_default(RouteId(d)).unwrap();
    }
    b.build()
}

/// Looks up and returns the id plus the params as owned pairs.
fn look(t: &RouteTable, m: Method, path: &str) -> (Option<u32>, Vec<(String, String)>) {
    let mut p = Params::new();
    let id = t.lookup(m, path, &mut p).map(|r| r.0);
    let ps = p
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (id, ps)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn http_api_precedence_table() {
    let t = table(
        &[
            (GET, "/pets/dog/1", 1),
            (GET, "/pets/dog/{id}", 2),
            (GET, "/pets/{proxy+}", 3),
            (MethodSpec::Any, "/{proxy+}", 4),
        ],
        Some(99),
    );
    assert_eq!(look(&t, Method::Get, "/pets/dog/1"), (Some(1), vec![]));
    assert_eq!(
        look(&t, Method::Get, "/pets/dog/2"),
        (Some(2), kv(&[("id", "2")]))
    );
    assert_eq!(
        look(&t, Method::Get, "/pets/cat/1"),
        (Some(3), kv(&[("proxy", "cat/1")]))
    );
    assert_eq!(
        look(&t, Method::Post, "/test/5"),
        (Some(4), kv(&[("proxy", "test/5")]))
    );
    assert_eq!(look(&t, Method::Get, "/"), (Some(99), vec![]));
    // POST on a GET-only resource falls through to the ANY greedy route.
    assert_eq!(
        look(&t, Method::Post, "/pets/dog/1"),
        (Some(4), kv(&[("proxy", "pets/dog/1")]))
    );
    assert_eq!(t.len(), 4);
    assert_eq!(t.default_route(), Some(RouteId(99)));
}

#[test]
fn rest_backtracking() {
    let t = table(
        &[
            (GET, "/a/b/c", 1),
            (GET, "/a/{x}/d", 2),
            (GET, "/{proxy+}", 3),
        ],
        None,
    );
    assert_eq!(look(&t, Method::Get, "/a/b/c"), (Some(1), vec![]));
    assert_eq!(
        look(&t, Method::Get, "/a/b/d"),
        (Some(2), kv(&[("x", "b")]))
    );
    assert_eq!(
        look(&t, Method::Get, "/a/b/e"),
        (Some(3), kv(&[("proxy", "a/b/e")]))
    );
    // Deeper than any template: only greedy can take it.
    assert_eq!(
        look(&t, Method::Get, "/a/b/c/d"),
        (Some(3), kv(&[("proxy", "a/b/c/d")]))
    );
    // The resource /a exists but has no handler: greedy takes it.
    assert_eq!(
        look(&t, Method::Get, "/a"),
        (Some(3), kv(&[("proxy", "a")]))
    );
}

#[test]
fn param_beats_greedy_and_params_do_not_leak_on_backtrack() {
    let t = table(
        &[
            (GET, "/{a}/{b}/x", 1),
            (GET, "/{c}/{proxy+}", 2),
            (GET, "/{d}", 3),
        ],
        None,
    );
    assert_eq!(
        look(&t, Method::Get, "/1/2/x"),
        (Some(1), kv(&[("a", "1"), ("b", "2")]))
    );
    // {a}/{b} fails at depth 3; backtrack must pop b and leave only c, proxy.
    assert_eq!(
        look(&t, Method::Get, "/1/2/y"),
        (Some(2), kv(&[("c", "1"), ("proxy", "2/y")]))
    );
    assert_eq!(look(&t, Method::Get, "/1"), (Some(3), kv(&[("d", "1")])));
}

#[test]
fn any_versus_explicit_method() {
    let t = table(&[(GET, "/items", 1), (MethodSpec::Any, "/items", 2)], None);
    assert_eq!(look(&t, Method::Get, "/items").0, Some(1));
    assert_eq!(look(&t, Method::Post, "/items").0, Some(2));
    assert_eq!(look(&t, Method::Head, "/items").0, Some(2));
    for m in Method::ALL {
        let want = if m == Method::Get { 1 } else { 2 };
        assert_eq!(look(&t, m, "/items").0, Some(want), "{m}");
    }
}

#[test]
fn method_missing_without_default_is_none() {
    let t = table(&[(GET, "/items", 1)], None);
    assert_eq!(look(&t, Method::Post, "/items"), (None, vec![]));
    assert_eq!(look(&t, Method::Get, "/other"), (None, vec![]));
    let t = table(&[(GET, "/items", 1)], Some(7));
    assert_eq!(look(&t, Method::Post, "/items").0, Some(7));
}

#[test]
fn same_shape_different_names_share_a_resource() {
    let mut b = RouteTableBuilder::new();
    b.add(GET, "/a/{id}", RouteId(1)).unwrap();
    b.add(MethodSpec::One(Method::Put), "/a/{x}", RouteId(2))
        .unwrap();
    let t = b.build();
    assert_eq!(look(&t, Method::Get, "/a/5"), (Some(1), kv(&[("id", "5")])));
    assert_eq!(look(&t, Method::Put, "/a/5"), (Some(2), kv(&[("x", "5")])));
}

#[test]
fn conflicts() {
    let mut b = RouteTableBuilder::new();
    b.add(GET, "/a/{id}", RouteId(1)).unwrap();
    b.add(MethodSpec::Any, "/a/{id}", RouteId(2)).unwrap();
    b.add(GET, "/g/{p+}", RouteId(3)).unwrap();
    let e = b.add(GET, "/a/{x}", RouteId(4)).unwrap_err();
    assert_eq!(
        e,
        RouteError::Conflict {
            method: GET,
            path: "/a/{x}".into(),
            existing_path: "/a/{id}".into(),
            existing: RouteId(1),
        }
    );
    assert!(e.to_string().contains("/a/{id}"), "{e}");
    assert!(matches!(
        b.add(MethodSpec::Any, "/a/{y}", RouteId(5)),
        Err(RouteError::Conflict {
            existing: RouteId(2),
            ..
        })
    ));
    assert!(matches!(
        b.add(GET, "/g/{q+}", RouteId(6)),
        Err(RouteError::Conflict {
            existing: RouteId(3),
            ..
        })
    ));
    // A literal, a param and a greedy child are distinct resources.
    b.add(GET, "/g/x", RouteId(7)).unwrap();
    b.add(GET, "/g/{p}", RouteId(8)).unwrap();
    b.add(GET, "/", RouteId(9)).unwrap();
    assert!(matches!(
        b.add(GET, "/", RouteId(10)),
        Err(RouteError::Conflict { .. })
    ));
    assert_eq!(b.set_default(RouteId(0)), Ok(()),);
    let e = b.set_default(RouteId(1)).unwrap_err();
    assert_eq!(
        e,
        RouteError::DefaultTwice {
            existing: RouteId(0),
            new: RouteId(1)
        }
    );
    // Failed adds leave the table usable and unchanged.
    let t = b.build();
    assert_eq!(t.len(), 6);
    assert_eq!(look(&t, Method::Get, "/a/1").0, Some(1));
}

#[test]
fn template_errors() {
    fn err(path: &str) -> RouteError {
        RouteTableBuilder::new()
            .add(GET, path, RouteId(0))
            .unwrap_err()
    }
    assert_eq!(err(""), RouteError::EmptyPath);
    assert!(matches!(err("a/b"), RouteError::NoLeadingSlash { .. }));
    assert!(matches!(err("/a/"), RouteError::TrailingSlash { .. }));
    assert!(matches!(err("//"), RouteError::TrailingSlash { .. }));
    assert!(matches!(err("/a//b"), RouteError::EmptySegment { .. }));
    assert!(matches!(err("//a"), RouteError::EmptySegment { .. }));
    for bad in [
        "/a{id}", "/{id}x", "/{id", "/{}", "/{+}", "/{a-b}", "/a}", "/a b", "/a%20", "/é", "/a?b",
        "/{{x}}",
    ] {
        assert!(
            matches!(err(bad), RouteError::BadSegment { .. }),
            "{bad}: {:?}",
            err(bad)
        );
    }
    assert_eq!(
        err("/{p+}/x"),
        RouteError::GreedyNotLast {
            path: "/{p+}/x".into(),
            segment: "{p+}".into()
        }
    );
    assert_eq!(
        err("/{id}/x/{id}"),
        RouteError::DuplicateParam {
            path: "/{id}/x/{id}".into(),
            name: "id".into()
        }
    );
    assert_eq!(
        err("/{id}/{id+}"),
        RouteError::DuplicateParam {
            path: "/{id}/{id+}".into(),
            name: "id".into()
        }
    );
    let many: String = (0..=MAX_PARAMS).map(|i| format!("/{{p{i}}}")).collect();
    assert!(matches!(err(&many), RouteError::TooManyParams { .. }));
    let exactly: String = (0..MAX_PARAMS).map(|i| format!("/{{p{i}}}")).collect();
    RouteTableBuilder::new()
        .add(GET, &exactly, RouteId(0))
        .unwrap();
    let deep = "/a".repeat(MAX_SEGMENTS + 1);
    assert!(matches!(err(&deep), RouteError::TooDeep { .. }));
    RouteTableBuilder::new()
        .add(GET, &"/a".repeat(MAX_SEGMENTS), RouteId(0))
        .unwrap();
    // Permitted literal punctuation.
    RouteTableBuilder::new()
        .add(GET, "/a_b-c.d,e:f~g@h!i$j&k'l(m)n*o+p;q=r", RouteId(0))
        .unwrap();
    // Every message names the template.
    let e = err("/a{id}");
    assert!(e.to_string().contains("/a{id}"), "{e}");
}

#[test]
fn many_params_fill_in_order() {
    let tpl: String = (0..MAX_PARAMS).map(|i| format!("/{{p{i}}}")).collect();
    let t = table(&[(GET, &tpl, 1)], None);
    let path: String = (0..MAX_PARAMS).map(|i| format!("/v{i}")).collect();
    let mut p = Params::new();
    assert_eq!(t.lookup(Method::Get, &path, &mut p), Some(RouteId(1)));
    assert_eq!(p.len(), MAX_PARAMS);
    for (i, (n, v)) in p.iter().enumerate() {
        assert_eq!(n, format!("p{i}"));
        assert_eq!(v, format!("v{i}"));
    }
}

#[test]
fn params_are_slices_of_the_path() {
    let t = table(&[(GET, "/pets/{id}/files/{rest+}", 1)], None);
    let path = String::from("/pets/42/files/a/b.txt");
    let mut p = Params::new();
    assert_eq!(t.lookup(Method::Get, &path, &mut p), Some(RouteId(1)));
    let range = path.as_bytes().as_ptr_range();
    for (_, v) in p.iter() {
        let r = v.as_bytes().as_ptr_range();
        assert!(range.start <= r.start && r.end <= range.end);
    }
    assert_eq!(p.get("id"), Some("42"));
    assert_eq!(p.get("rest"), Some("a/b.txt"));
    assert_eq!(p.get("nope"), None);
    assert_eq!(p.len(), 2);
    assert!(!p.is_empty());
    p.clear();
    assert!(p.is_empty());
    assert_eq!(p.get("id"), None);
    // A miss leaves params empty even if they were full before.
    let mut p = Params::new();
    t.lookup(Method::Get, "/pets/1/files/x", &mut p);
    assert_eq!(p.len(), 2);
    assert_eq!(t.lookup(Method::Get, "/pets/1", &mut p), None);
    assert!(p.is_empty());
}

#[test]
fn trailing_slash_root_and_empty_segments() {
    let t = table(
        &[
            (GET, "/", 1),
            (GET, "/pets", 2),
            (GET, "/pets/{id}", 3),
            (GET, "/files/{p+}", 4),
        ],
        None,
    );
    assert_eq!(look(&t, Method::Get, "/").0, Some(1));
    assert_eq!(look(&t, Method::Get, "/pets").0, Some(2));
    assert_eq!(look(&t, Method::Get, "/pets/").0, Some(2));
    assert_eq!(
        look(&t, Method::Get, "/pets/7/"),
        (Some(3), kv(&[("id", "7")]))
    );
    // Only one trailing slash is ignored.
    assert_eq!(look(&t, Method::Get, "/pets//").0, None);
    assert_eq!(look(&t, Method::Get, "//").0, None);
    // Empty segments never match a literal or a param...
    assert_eq!(look(&t, Method::Get, "//pets").0, None);
    assert_eq!(look(&t, Method::Get, "/pets//x").0, None);
    // ...but a greedy parameter may span them, and never matches nothing.
    assert_eq!(
        look(&t, Method::Get, "/files/a//b/"),
        (Some(4), kv(&[("p", "a//b")]))
    );
    assert_eq!(look(&t, Method::Get, "/files").0, None);
    assert_eq!(look(&t, Method::Get, "/files/").0, None);
    // Not a path at all.
    assert_eq!(look(&t, Method::Get, "").0, None);
    assert_eq!(look(&t, Method::Get, "*").0, None);
    // Case-sensitive, no percent-decoding.
    assert_eq!(look(&t, Method::Get, "/Pets").0, None);
    assert_eq!(
        look(&t, Method::Get, "/pets/a%2Fb"),
        (Some(3), kv(&[("id", "a%2Fb")]))
    );
}

#[test]
fn root_greedy_does_not_match_root() {
    let t = table(&[(MethodSpec::Any, "/{proxy+}", 1)], Some(2));
    assert_eq!(look(&t, Method::Get, "/").0, Some(2));
    assert_eq!(
        look(&t, Method::Delete, "/x/"),
        (Some(1), kv(&[("proxy", "x")]))
    );
}

#[test]
fn method_parsing() {
    for m in Method::ALL {
        assert_eq!(Method::from_bytes(m.as_str().as_bytes()), Some(m));
        assert_eq!(m.to_string(), m.as_str());
    }
    for bad in [&b"get"[..], b"CONNECT", b"TRACE", b"PURGE", b"", b"GET "] {
        assert_eq!(Method::from_bytes(bad), None);
    }
    assert_eq!(MethodSpec::Any.to_string(), "ANY");
    assert_eq!(GET.to_string(), "GET");
}

#[test]
fn table_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<RouteTable>();
    check::<RouteError>();
}

#[test]
fn literal_map_threshold_with_param_sibling() {
    // More than LINEAR_SCAN_MAX literal children forces the hash-map form.
    let mut b = RouteTableBuilder::new();
    for i in 0..(LINEAR_SCAN_MAX as u32 * 3) {
        b.add(GET, &format!("/s/lit{i}"), RouteId(i)).unwrap();
    }
    b.add(GET, "/s/{other}", RouteId(1000)).unwrap();
    let t = b.build();
    for i in 0..(LINEAR_SCAN_MAX as u32 * 3) {
        assert_eq!(
            look(&t, Method::Get, &format!("/s/lit{i}")),
            (Some(i), vec![])
        );
    }
    assert_eq!(
        look(&t, Method::Get, "/s/zzz"),
        (Some(1000), kv(&[("other", "zzz")]))
    );
    let listed: Vec<_> = t.routes().collect();
    assert_eq!(listed.len(), t.len());
    assert_eq!(listed[0], (GET, "/s/lit0", RouteId(0)));
}

/// Tiny deterministic xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn property_random_static_routes_find_themselves() {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut b = RouteTableBuilder::new();
    let mut added: std::collections::HashMap<(String, usize), u32> = Default::default();
    for i in 0..3000u32 {
        let depth = 1 + rng.below(4);
        let mut path = String::new();
        for _ in 0..depth {
            path.push('/');
            // Short segments from a small set so prefixes are shared and
            // some nodes get many literal children.
            let len = 1 + rng.below(2);
            let spread = 6 + rng.below(ALPHABET.len() as u64 - 6);
            for _ in 0..len {
                path.push(ALPHABET[rng.below(spread) as usize] as char);
            }
        }
        let m = Method::ALL[rng.below(3) as usize];
        match b.add(MethodSpec::One(m), &path, RouteId(i)) {
            Ok(()) => {
                assert!(added.insert((path, m.index()), i).is_none());
            }
            Err(RouteError::Conflict { .. }) => {
                assert!(added.contains_key(&(path, m.index())));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let t = b.build();
    assert_eq!(t.len(), added.len());
    for ((path, mi), id) in &added {
        let mut p = Params::new();
        assert_eq!(
            t.lookup(Method::ALL[*mi], path, &mut p),
            Some(RouteId(*id)),
            "{path}"
        );
        assert!(p.is_empty());
        // With a trailing slash too.
        let slashed = format!("{path}/");
        let mut p = Params::new();
        assert_eq!(
            t.lookup(Method::ALL[*mi], &slashed, &mut p),
            Some(RouteId(*id))
        );
    }
    // Random paths that were not added miss (no default, no params).
    for _ in 0..2000 {
        let path = format!("/{}/{}", rng.next(), rng.next());
        let mut p = Params::new();
        assert_eq!(t.lookup(Method::Get, &path, &mut p), None);
    }
}

#[test]
fn module_doc_example() {
    let mut b = RouteTableBuilder::new();
    b.add(MethodSpec::One(Method::Get), "/pets/{id}", RouteId(1))
        .unwrap();
    b.add(MethodSpec::Any, "/{proxy+}", RouteId(2)).unwrap();
    b.set_default(RouteId(0)).unwrap();
    let table = b.build();

    let mut params = Params::new();
    assert_eq!(
        table.lookup(Method::Get, "/pets/7", &mut params),
        Some(RouteId(1))
    );
    assert_eq!(params.get("id"), Some("7"));
}
