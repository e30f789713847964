use super::*;
use crate::http::date::HttpDate;
use proptest::prelude::*;

/// 2026-11-22 12:00:00 UTC.
const NOW: u64 = 1_795_348_800;

fn date(secs: u64) -> String {
    String::from_utf8(HttpDate::from_unix(secs).as_bytes().to_vec()).unwrap()
}

fn head(status: u16, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nx-amzn-Remapped-Date: {}\r\n{extra}",
        date(NOW)
    )
}

fn rules() -> Rules<'static> {
    let targeted: Vec<Box<str>> = vec!["ringgate-cache-control".into(), "cdn-cache-control".into()];
    Rules {
        heuristic_max_ms: 3_600_000,
        targeted: Box::leak(targeted.into_boxed_slice()),
        store_set_cookie: false,
        keyed: &|n: &[u8]| n.eq_ignore_ascii_case(b"accept-language"),
    }
}

fn times() -> Times {
    Times {
        request_ms: NOW * 1000,
        response_ms: NOW * 1000,
    }
}

fn eval(status: u16, extra: &str) -> Decision {
    evaluate(
        head(status, extra).as_bytes(),
        status,
        RequestFacts::default(),
        times(),
        &rules(),
    )
}

fn lifetime(status: u16, extra: &str) -> u64 {
    match eval(status, extra) {
        Decision::Store(f) => f.lifetime_ms,
        Decision::Skip(why) => panic!("not stored: {why:?} for {extra:?}"),
    }
}

fn skipped(status: u16, extra: &str) -> NotStored {
    match eval(status, extra) {
        Decision::Skip(why) => why,
        Decision::Store(f) => panic!("stored {f:?} for {extra:?}"),
    }
}

#[test]
fn explicit_freshness_order() {
    assert_eq!(lifetime(200, "Cache-Control: max-age=60\r\n"), 60_000);
    assert_eq!(
        lifetime(200, "Cache-Control: max-age=60, s-maxage=10\r\n"),
        10_000
    );
    let expires = format!("Expires: {}\r\n", date(NOW + 90));
    assert_eq!(lifetime(200, &expires), 90_000);
    // max-age over Expires.
    assert_eq!(
        lifetime(200, &format!("{expires}Cache-Control: max-age=5\r\n")),
        5_000
    );
    // Quoted and duplicate values: the lowest wins.
    assert_eq!(
        lifetime(200, "Cache-Control: max-age=\"50\", max-age=20\r\n"),
        20_000
    );
}

#[test]
fn invalid_expires_or_age_means_stale() {
    // Stale on arrival with no validator: nothing to reuse.
    assert_eq!(skipped(200, "Expires: 0\r\n"), NotStored::Useless);
    match eval(200, "Expires: 0\r\nETag: \"a\"\r\n") {
        Decision::Store(f) => assert_eq!(f.lifetime_ms, 0),
        d => panic!("{d:?}"),
    }
    match eval(
        200,
        "Cache-Control: max-age=60\r\nAge: x\r\nETag: \"a\"\r\n",
    ) {
        Decision::Store(f) => assert_eq!(f.lifetime_ms, 0),
        d => panic!("{d:?}"),
    }
    assert_eq!(
        skipped(200, "Cache-Control: max-age=-5\r\n"),
        NotStored::Useless
    );
}

#[test]
fn origin_age_and_apparent_age_count() {
    let Decision::Store(f) = eval(200, "Cache-Control: max-age=60\r\nAge: 20\r\n") else {
        panic!()
    };
    assert_eq!(f.initial_age_ms, 20_000);
    // Date 30 s before the response arrived: apparent age 30 s.
    let h = format!(
        "HTTP/1.1 200 OK\r\nDate: {}\r\nCache-Control: max-age=60\r\nAge: 5\r\n",
        date(NOW - 30)
    );
    let Decision::Store(f) = evaluate(
        h.as_bytes(),
        200,
        RequestFacts::default(),
        times(),
        &rules(),
    ) else {
        panic!()
    };
    assert_eq!(f.initial_age_ms, 30_000);
    assert_eq!(f.date_secs, NOW - 30);
    // The response delay counts toward the origin's Age.
    let t = Times {
        request_ms: NOW * 1000 - 2_500,
        response_ms: NOW * 1000,
    };
    let h = head(200, "Cache-Control: max-age=60\r\nAge: 5\r\n");
    let Decision::Store(f) = evaluate(h.as_bytes(), 200, RequestFacts::default(), t, &rules())
    else {
        panic!()
    };
    assert_eq!(f.initial_age_ms, 7_500);
    // Aged past its lifetime on arrival, without a validator: useless.
    assert_eq!(
        skipped(200, "Cache-Control: max-age=10\r\nAge: 10\r\n"),
        NotStored::Useless
    );
}

#[test]
fn heuristics_only_for_listed_statuses_with_last_modified() {
    let lm = format!("Last-Modified: {}\r\n", date(NOW - 1000));
    assert_eq!(lifetime(200, &lm), 100_000);
    assert_eq!(lifetime(404, &lm), 100_000);
    // Capped by the stage.
    let old = format!("Last-Modified: {}\r\n", date(NOW - 10_000_000));
    assert_eq!(lifetime(200, &old), 3_600_000);
    // No Last-Modified: no heuristic, nothing to reuse.
    assert_eq!(skipped(200, ""), NotStored::Useless);
    // Not heuristically cacheable: never stored without explicit freshness.
    for status in [403, 500, 502, 503, 504] {
        assert_eq!(skipped(status, &lm), NotStored::NotCacheable, "{status}");
        assert_eq!(
            lifetime(status, "Cache-Control: max-age=7\r\n"),
            7_000,
            "{status}"
        );
    }
    assert_eq!(
        skipped(206, "Cache-Control: max-age=7\r\n"),
        NotStored::Status
    );
    assert_eq!(
        skipped(304, "Cache-Control: max-age=7\r\n"),
        NotStored::Status
    );
}

#[test]
fn what_is_never_stored() {
    assert_eq!(
        skipped(200, "Cache-Control: no-store, max-age=60\r\n"),
        NotStored::NoStore
    );
    assert_eq!(
        skipped(200, "Cache-Control: private, max-age=60\r\n"),
        NotStored::Private
    );
    assert_eq!(
        skipped(
            200,
            "Cache-Control: private=\"x-user, x-other\", max-age=60\r\n"
        ),
        NotStored::Private
    );
    assert_eq!(
        skipped(200, "Set-Cookie: a=b\r\nCache-Control: max-age=60\r\n"),
        NotStored::SetCookie
    );
    assert_eq!(
        skipped(200, "Vary: *\r\nCache-Control: max-age=60\r\n"),
        NotStored::Vary
    );
    // A Vary on a header the key lacks: stored as a variant.
    match eval(
        200,
        "Vary: Accept-Encoding\r\nCache-Control: max-age=60\r\n",
    ) {
        Decision::Store(f) => assert!(f.varies),
        d => panic!("{d:?}"),
    }
    assert_eq!(
        lifetime(
            200,
            "Vary: accept-language\r\nCache-Control: max-age=60\r\n"
        ),
        60_000
    );
    let auth = |extra: &str| {
        evaluate(
            head(200, extra).as_bytes(),
            200,
            RequestFacts {
                authorization: true,
            },
            times(),
            &rules(),
        )
    };
    assert_eq!(
        auth("Cache-Control: max-age=60\r\n"),
        Decision::Skip(NotStored::Authorization)
    );
    for allowed in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        assert!(
            matches!(
                auth(&format!("Cache-Control: {allowed}\r\n")),
                Decision::Store(_)
            ),
            "{allowed}"
        );
    }
}

#[test]
fn no_cache_is_stored_for_revalidation() {
    let Decision::Store(f) = eval(
        200,
        "Cache-Control: no-cache, max-age=60\r\nETag: \"v1\"\r\n",
    ) else {
        panic!()
    };
    assert!(f.no_cache);
    assert_eq!(f.lifetime_ms, 60_000);
    // Without a validator there is nothing to revalidate with.
    assert_eq!(
        skipped(200, "Cache-Control: no-cache\r\n"),
        NotStored::Useless
    );
}

#[test]
fn revalidation_and_stale_directives() {
    let h = "Cache-Control: max-age=1, stale-while-revalidate=30, stale-if-error=60\r\n";
    let Decision::Store(f) = eval(200, h) else {
        panic!()
    };
    assert_eq!(f.stale_while_revalidate_ms, 30_000);
    assert_eq!(f.stale_if_error_ms, Some(60_000));
    assert!(!f.must_revalidate);
    for strict in ["must-revalidate", "proxy-revalidate", "s-maxage=1"] {
        let h = format!(
            "Cache-Control: max-age=1, {strict}, stale-while-revalidate=30, stale-if-error=60\r\n"
        );
        let Decision::Store(f) = eval(200, &h) else {
            panic!()
        };
        assert!(f.must_revalidate, "{strict}");
        assert_eq!(f.stale_while_revalidate_ms, 0);
        assert_eq!(f.stale_if_error_ms, None);
    }
}

#[test]
fn validators_are_found_as_ranges() {
    let text = head(
        200,
        "ETag:  W/\"abc\" \r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nCache-Control: max-age=1\r\n",
    );
    let Decision::Store(f) = evaluate(
        text.as_bytes(),
        200,
        RequestFacts::default(),
        times(),
        &rules(),
    ) else {
        panic!()
    };
    assert_eq!(&text.as_bytes()[f.etag.clone().unwrap()], b"W/\"abc\"");
    assert_eq!(
        &text.as_bytes()[f.last_modified.clone().unwrap()],
        b"Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(f.last_modified_secs, Some(784_111_777));
}

#[test]
fn targeted_fields_replace_cache_control_and_expires() {
    assert_eq!(
        lifetime(
            200,
            "Cache-Control: no-store\r\nCDN-Cache-Control: max-age=120\r\n"
        ),
        120_000
    );
    // The first in precedence wins.
    assert_eq!(
        lifetime(
            200,
            "CDN-Cache-Control: max-age=120\r\nRinggate-Cache-Control: max-age=9\r\nExpires: 0\r\n"
        ),
        9_000
    );
    assert_eq!(
        skipped(
            200,
            "Cache-Control: max-age=60\r\nCDN-Cache-Control: no-store\r\n"
        ),
        NotStored::NoStore
    );
}

#[test]
fn request_directives_read() {
    let r = request_directives(
        [&b"no-cache, max-age=5"[..], b"min-fresh=3, only-if-cached"],
        false,
    );
    assert!(r.no_cache && r.only_if_cached && !r.no_store);
    assert_eq!(r.max_age, Some(5));
    assert_eq!(r.min_fresh, Some(3));
    assert!(request_directives(std::iter::empty::<&[u8]>(), true).no_cache);
    assert!(!request_directives([&b"max-age=9"[..]], true).no_cache);
    assert_eq!(
        request_directives([&b"max-age=x"[..]], false).max_age,
        Some(0)
    );
}

#[test]
fn refresh_is_max_age_zero_in_any_value() {
    assert!(asks_refresh([&b"max-age=0"[..]]));
    assert!(asks_refresh([
        &b"no-transform"[..],
        &b" public , MAX-AGE=0 "[..]
    ]));
    assert!(!asks_refresh([&b"max-age=00"[..]]));
    assert!(!asks_refresh([&b"max-age=10"[..]]));
    assert!(!asks_refresh(std::iter::empty::<&[u8]>()));
}

#[test]
fn conditional_matching() {
    assert!(etag_matches(b"\"a\"", b"\"a\""));
    assert!(etag_matches(b"W/\"a\"", b"\"a\""));
    assert!(etag_matches(b"\"x\", W/\"a\"", b"W/\"a\""));
    assert!(etag_matches(b"*", b"\"a\""));
    assert!(!etag_matches(b"\"b\"", b"\"a\""));
    assert!(!etag_matches(b"a", b"\"a\""));
    assert!(!etag_matches(b"\"a", b"\"a\""));
    assert!(!etag_matches(b"\"a\"", b"a"));
    assert!(not_modified_since(
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        Some(784_111_777)
    ));
    assert!(!not_modified_since(
        b"Sun, 06 Nov 1994 08:49:36 GMT",
        Some(784_111_777)
    ));
    assert!(!not_modified_since(b"yesterday", Some(1)));
    assert!(!not_modified_since(b"Sun, 06 Nov 1994 08:49:37 GMT", None));
}

#[test]
fn field_value_ranges_match_the_trimmed_values() {
    // A form feed is not OWS: it stays in the value (found by proptest).
    for head in [&b"\n:\x0c"[..], b"S\r\nA:  \t v \r\nB:\r\nC: \x0b x"] {
        for (_, v, r) in fields(head) {
            assert_eq!(&head[r], v);
        }
    }
}

#[test]
fn delta_seconds_cap_and_refuse() {
    assert_eq!(delta_seconds(Some(b"0")), Some(0));
    assert_eq!(delta_seconds(Some(b"007")), Some(7));
    assert_eq!(
        delta_seconds(Some(b"99999999999999999999999")),
        Some(MAX_DELTA_SECS)
    );
    assert_eq!(delta_seconds(Some(b"")), None);
    assert_eq!(delta_seconds(Some(b"1e3")), None);
    assert_eq!(delta_seconds(None), None);
}

#[test]
fn vary_names_skip_keyed_and_duplicates() {
    let keyed = |n: &[u8]| n.eq_ignore_ascii_case(b"accept-language");
    let h = head(
        200,
        "Vary: Accept-Encoding, accept-language\r\nVary: X-Tenant, ACCEPT-ENCODING, ,\r\n",
    );
    assert_eq!(
        vary_names(h.as_bytes(), &keyed),
        b"accept-encoding\nx-tenant\n"
    );
    assert!(vary_names(head(200, "Vary: Accept-Language\r\n").as_bytes(), &keyed).is_empty());
    match eval(
        200,
        "Vary: accept-language\r\nCache-Control: max-age=60\r\n",
    ) {
        Decision::Store(f) => assert!(!f.varies),
        d => panic!("{d:?}"),
    }
}

#[test]
fn byte_ranges() {
    use RangeAsk::*;
    assert_eq!(byte_range(b"bytes=0-3", 10), Part(0, 3));
    assert_eq!(byte_range(b"Bytes = 2 - ", 10), Part(2, 9));
    assert_eq!(byte_range(b"bytes=-4", 10), Part(6, 9));
    assert_eq!(byte_range(b"bytes=-40", 10), Part(0, 9));
    assert_eq!(byte_range(b"bytes=5-100", 10), Part(5, 9));
    assert_eq!(byte_range(b"bytes=10-", 10), Unsatisfiable);
    assert_eq!(byte_range(b"bytes=10-12", 10), Unsatisfiable);
    assert_eq!(byte_range(b"bytes=-0", 10), Unsatisfiable);
    assert_eq!(byte_range(b"bytes=-1", 0), Unsatisfiable);
    for whole in [
        &b"bytes=4-3"[..],
        b"bytes=0-1,4-5",
        b"items=0-1",
        b"bytes=a-b",
        b"bytes=-",
        b"bytes 0-1",
        b"bytes=99999999999999999999-",
    ] {
        assert_eq!(
            byte_range(whole, 10),
            Whole,
            "{:?}",
            String::from_utf8_lossy(whole)
        );
    }
}

#[test]
fn if_range_guards() {
    assert!(if_range_allows(b"\"a\"", Some(b"\"a\""), None));
    assert!(!if_range_allows(b"\"a\"", Some(b"W/\"a\""), None));
    assert!(!if_range_allows(b"W/\"a\"", Some(b"W/\"a\""), None));
    assert!(!if_range_allows(b"\"b\"", Some(b"\"a\""), None));
    let d = b"Sun, 06 Nov 1994 08:49:37 GMT";
    assert!(if_range_allows(d, None, Some(784_111_777)));
    assert!(!if_range_allows(d, None, Some(784_111_778)));
    assert!(!if_range_allows(b"junk", Some(b"\"a\""), Some(1)));
}

proptest! {
    #![proptest_config(crate::proptest_config(1000))]

    /// Arbitrary head bytes: no panic, and every range found lies inside
    /// the head.
    #[test]
    fn hostile_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), status in 0u16..700) {
        if let Decision::Store(f) = evaluate(&bytes, status, RequestFacts::default(), times(), &rules()) {
            for r in [f.etag, f.last_modified].into_iter().flatten() {
                prop_assert!(r.start <= r.end && r.end <= bytes.len());
            }
        }
        for (_, v, r) in fields(&bytes) {
            prop_assert_eq!(&bytes[r], v);
        }
        let _ = directives(&bytes).count();
        let _ = vary_names(&bytes, &|_: &[u8]| false);
        let _ = request_directives([&bytes[..]], true);
        let _ = etag_matches(&bytes, b"\"a\"");
        let _ = etag_matches(b"\"a\", W/\"b\"", &bytes);
        let _ = not_modified_since(&bytes, Some(1));
        let _ = if_range_allows(&bytes, Some(b"\"a\""), Some(1));
        for len in [0u64, 1, 10, u64::MAX] {
            if let RangeAsk::Part(first, last) = byte_range(&bytes, len) {
                prop_assert!(first <= last && last < len);
            }
        }
    }

    /// Every well-formed single range lies inside the representation.
    #[test]
    fn ranges_stay_inside(first in 0u64..50, last in 0u64..50, len in 0u64..40, suffix in any::<bool>()) {
        let v = if suffix { format!("bytes=-{last}") } else { format!("bytes={first}-{last}") };
        if let RangeAsk::Part(f, l) = byte_range(v.as_bytes(), len) {
            prop_assert!(f <= l && l < len);
        }
    }

    /// Mutated real heads: no panic, ranges stay inside.
    #[test]
    fn mutated_heads_never_panic(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6)) {
        let mut bytes = head(200, "Cache-Control: max-age=60, stale-if-error=\"5\"\r\nETag: \"v\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nAge: 3\r\nCDN-Cache-Control: s-maxage=9\r\n").into_bytes();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        if let Decision::Store(f) = evaluate(&bytes, 200, RequestFacts::default(), times(), &rules()) {
            for r in [f.etag, f.last_modified].into_iter().flatten() {
                prop_assert!(r.end <= bytes.len());
            }
        }
    }
}
