//! Formats: parsing, the presets read back by real parsers (serde_json,
//! the csv crate, a regex for CLF), escaping of hostile bytes, the clock;
//! and property tests over arbitrary records in each escaping kind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::http::date::HttpDate;

/// A record with every value set, some of them hostile.
fn full<'a>() -> LogRecord<'a> {
    LogRecord {
        request_id: b"c0ffee00-1234",
        extended_request_id: Some(b"ext-42"),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
        source_ip_text: None,
        tokens_checked: false,
        user_agent: Some(b"curl/8 \"q\" \\b\x01\n\xff\xfe"),
        api_key_id: Some("key-1"),
        method: b"GET",
        resource_path: Some("/pets/{id},\"x\""),
        path: b"/pets/7?a=\"1\"&b=\\\r\n\x00\xc3\x28",
        stage: Some("prod"),
        api_id: Some("petstore"),
        resource_id: Some("r1"),
        account_id: Some("123456789012"),
        host: Some(b"api.example.com"),
        protocol: "HTTP/1.1",
        request_time_ms: 784_111_777_123, // 06/Nov/1994:08:49:37
        status: 200,
        response_length: Some(1234),
        response_latency_us: 12_999,
        integration_latency_us: Some(7_001),
        integration_status: Some(201),
        integration_error: Some("boom"),
        error_message: Some("Not Found"),
        error_response_type: Some("RESOURCE_NOT_FOUND"),
        base_path_matched: Some("v1"),
        is_canary: true,
        outcome: "proxied",
        client_cert: None,
    }
}

/// A record with every optional value unset.
fn empty<'a>() -> LogRecord<'a> {
    LogRecord::new(b"id-0", 0)
}

fn line(format: &LogFormat, rec: &LogRecord<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    format.write(rec, &mut ClfClock::new(), &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{out:?}");
    out
}

fn preset(name: &str) -> LogFormat {
    LogFormat::from_setting(name).unwrap()
}

/// A JSON string's bytes: each char is a byte (JSON mode escapes every
/// byte from 0x7f as `\u00XX`).
fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_str()
        .expect("a string")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a char <= 0xff"))
        .collect()
}

#[test]
fn json_preset_reads_back() {
    let f = preset("json");
    assert_eq!(f.escape(), Escape::Json);
    let out = line(&f, &full());
    assert!(out.is_ascii());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let want = [
        ("requestId", "c0ffee00-1234"),
        ("extendedRequestId", "ext-42"),
        ("ip", "203.0.113.9"),
        ("caller", "-"),
        ("user", "-"),
        ("requestTime", "06/Nov/1994:08:49:37 +0000"),
        ("httpMethod", "GET"),
        ("resourcePath", "/pets/{id},\"x\""),
        ("status", "200"),
        ("protocol", "HTTP/1.1"),
        ("responseLength", "1234"),
    ];
    assert_eq!(v.as_object().unwrap().len(), want.len());
    for (k, w) in want {
        assert_eq!(v[k], w, "{k}");
    }

    let out = line(&f, &empty());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for (k, w) in [
        ("requestId", "id-0"),
        ("extendedRequestId", "-"),
        ("ip", "-"),
        ("httpMethod", "-"),
        ("resourcePath", "-"),
        ("requestTime", "01/Jan/1970:00:00:00 +0000"),
        ("status", "-"),
        ("responseLength", "-"),
        ("protocol", "HTTP/1.1"),
    ] {
        assert_eq!(v[k], w, "{k}");
    }
}

#[test]
fn json_escapes_hostile_bytes_recoverably() {
    let f = LogFormat::parse(
        r#"{"id":"$context.requestId","ua":"$context.identity.userAgent","path":"$context.path","rk":"$context.routeKey","lat":$context.responseLatency,"ilat":$context.integrationLatency}"#,
    )
    .unwrap();
    let rec = full();
    let out = line(&f, &rec);
    assert!(out.is_ascii(), "{}", String::from_utf8_lossy(&out));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json_bytes(&v["ua"]), rec.user_agent.unwrap());
    assert_eq!(json_bytes(&v["path"]), rec.path);
    assert_eq!(v["rk"], "GET /pets/{id},\"x\"");
    assert_eq!(v["lat"], 12);
    assert_eq!(v["ilat"], 7);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#"curl/8 \"q\" \\b\u0001\n\u00ff\u00fe"#),
        "{text}"
    );
}

#[test]
fn csv_preset_reads_back() {
    let f = preset("csv");
    assert_eq!(f.escape(), Escape::Csv);
    let out = line(&f, &full());
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&out[..]);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let fields: Vec<&str> = rows[0].iter().collect();
    assert_eq!(
        fields,
        [
            "203.0.113.9",
            "-",
            "-",
            "06/Nov/1994:08:49:37 +0000",
            "GET",
            "/pets/{id},\"x\"",
            "HTTP/1.1",
            "200",
            "1234",
            "c0ffee00-1234",
            "ext-42",
        ]
    );

    let out = line(&f, &empty());
    assert_eq!(
        out,
        b"-,-,-,01/Jan/1970:00:00:00 +0000,-,-,HTTP/1.1,-,-,id-0,-\n"
    );
}

const CLF_RE: &str = r#"^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "(\S+) (\S+) (\S+)" (\d{3}|-) (\d+|-) (\S+) (\S+)\n$"#;
const HTTP_API_CLF_RE: &str = r#"^(\S+) - - \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "(\S+) (\S+ \S+|-) (\S+)" (\d{3}|-) (\d+|-) (.+)\n$"#;

#[test]
fn clf_presets_match() {
    let re = regex::bytes::Regex::new(CLF_RE).unwrap();
    let f = preset("clf");
    assert_eq!(f.escape(), Escape::Clf);
    let out = line(&f, &full());
    let c = re.captures(&out).expect("clf line");
    assert_eq!(&c[1], b"203.0.113.9");
    assert_eq!(&c[4], b"06/Nov/1994:08:49:37 +0000");
    assert_eq!(&c[6], br#"/pets/{id},\x22x\x22"#);
    assert_eq!(&c[8], b"200");
    assert_eq!(&c[10], b"c0ffee00-1234");
    let out = line(&f, &empty());
    assert_eq!(
        out,
        b"- - - [01/Jan/1970:00:00:00 +0000] \"- - HTTP/1.1\" - - id-0 -\n"
    );
    assert!(re.is_match(&out));

    let re = regex::bytes::Regex::new(HTTP_API_CLF_RE).unwrap();
    let f = preset("http_api_clf");
    let rec = LogRecord {
        source_ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        resource_path: Some("/pets/{id}"),
        ..full()
    };
    let out = line(&f, &rec);
    let c = re.captures(&out).expect("http_api_clf line");
    assert_eq!(&c[1], b"::1");
    assert_eq!(&c[4], b"GET /pets/{id}");
    let out = line(&f, &empty());
    assert!(re.is_match(&out), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn clf_escapes_like_nginx() {
    let f = LogFormat::parse("$context.requestId \"$context.identity.userAgent\"").unwrap();
    let out = line(&f, &full());
    assert_eq!(
        out,
        b"c0ffee00-1234 \"curl/8 \\x22q\\x22 \\x5Cb\\x01\\x0A\\xFF\\xFE\"\n"
    );
}

#[test]
fn every_variable_has_a_value() {
    let f = LogFormat::parse(
        "$context.requestId $context.identity.apiKey $context.identity.apiKeyId \
         $context.stage $context.apiId $context.resourceId $context.accountId \
         $context.domainName $context.domainPrefix $context.requestTimeEpoch \
         $context.responseLatency $context.integration.latency $context.integrationStatus \
         $context.integration.error $context.error.message $context.error.responseType \
         $context.customDomain.basePathMatched $context.isCanaryRequest \
         $context.ringgate.outcome $context.xrayTraceId $context.authorizer.claims.sub \
         $context.wafResponseCode $context.identity.clientCert.subjectDN $context.authorize.error.",
    )
    .unwrap();
    assert_eq!(
        line(&f, &full()),
        &b"c0ffee00-1234 key-1 key-1 prod petstore r1 123456789012 api.example.com api \
784111777123 12 7 201 boom Not Found RESOURCE_NOT_FOUND v1 true proxied - - - - -.\n"[..]
    );
    assert_eq!(
        line(&f, &empty()),
        &b"id-0 - - - - - - - - 0 0 - - - - - - false - - - - - -.\n"[..]
    );
}

#[test]
fn parse_rules() {
    // `$` without `context.` is literal; trailing dots end a name.
    let f = LogFormat::parse("$x $context.requestId. $$context.status.\n").unwrap();
    assert_eq!(
        f.parts(),
        &[
            Part::Literal((*b"$x ").into()),
            Part::Var(Var::RequestId),
            Part::Literal((*b". $").into()),
            Part::Var(Var::Status),
            Part::Literal((*b".").into()),
        ]
    );
    // Line breaks inside become one space; JSON is chosen by the first `{`.
    let f =
        LogFormat::parse("  {\n  \"id\": \"$context.requestId\",\r\n  \"s\": 1\n}\n\n").unwrap();
    assert_eq!(f.escape(), Escape::Json);
    let out = line(&f, &empty());
    assert_eq!(out, b"  { \"id\": \"id-0\", \"s\": 1 }\n");
    // The csv preset's text alone is CSV; with_escape overrides.
    assert_eq!(LogFormat::parse(PRESET_CSV).unwrap().escape(), Escape::Csv);
    let f = LogFormat::parse("$context.requestId,$context.path")
        .unwrap()
        .with_escape(Escape::Csv);
    assert_eq!(
        line(
            &f,
            &LogRecord {
                path: b"/a,b",
                ..empty()
            }
        ),
        b"id-0,\"/a,b\"\n"
    );
    assert_eq!(LogFormat::preset("nope"), None);
    assert!(LogFormat::from_setting("json").is_ok());
    // A setting that is not a preset is a format.
    assert_eq!(
        LogFormat::from_setting("clf2").unwrap_err(),
        FormatError::NoRequestId
    );
}

#[test]
fn parse_errors() {
    let e = LogFormat::parse("$context.requestId $context.statuss").unwrap_err();
    let FormatError::UnknownVariable { name, close } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(name, "statuss");
    assert_eq!(close.first(), Some(&"status"));
    let msg = e.to_string();
    assert!(msg.contains("$context.statuss"), "{msg}");
    assert!(msg.contains("did you mean $context.status"), "{msg}");

    let e = LogFormat::parse("$context.requestId $context.sourceIp").unwrap_err();
    assert!(e.to_string().contains("$context.identity.sourceIp"), "{e}");
    let e = LogFormat::parse("$context.requestId $context.zzzzzzzzzzzz").unwrap_err();
    assert!(e.to_string().contains("no known variable"), "{e}");
    let e = LogFormat::parse("$context.requestId $context. x").unwrap_err();
    assert!(matches!(e, FormatError::UnknownVariable { ref name, .. } if name.is_empty()));
    // Case matters, as in API Gateway.
    assert!(LogFormat::parse("$context.requestid").is_err());

    assert_eq!(
        LogFormat::parse("$context.status $context.path").unwrap_err(),
        FormatError::NoRequestId
    );
    assert!(LogFormat::parse("$context.extendedRequestId").is_ok());
    assert!(FormatError::NoRequestId.to_string().contains("requestId"));

    let ok = format!("$context.requestId{}", "-".repeat(MAX_FORMAT_LEN - 18));
    assert_eq!(ok.len(), MAX_FORMAT_LEN);
    assert!(LogFormat::parse(&ok).is_ok());
    assert!(LogFormat::parse(&format!("{ok}\n")).is_ok());
    let e = LogFormat::parse(&format!("{ok}x")).unwrap_err();
    assert_eq!(
        e,
        FormatError::TooLong {
            len: MAX_FORMAT_LEN + 1
        }
    );
    assert!(e.to_string().contains("3072"), "{e}");
}

#[test]
fn clock_formats_once_a_second() {
    let mut c = ClfClock::new();
    assert_eq!(c.format(0), b"01/Jan/1970:00:00:00 +0000");
    assert_eq!(c.format(951_868_799_999), b"29/Feb/2000:23:59:59 +0000");
    assert_eq!(c.format(1_795_348_800_000), b"22/Nov/2026:12:00:00 +0000");
    assert_eq!(c.formatted, 3);
    let base = 1_700_000_000_000;
    for ms in 0..1000 {
        c.format(base + ms);
    }
    assert_eq!(c.formatted, 4);
    c.format(base + 1000);
    assert_eq!(c.formatted, 5);
    assert_eq!(epoch_ms(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
    assert_eq!(epoch_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Every variable name (and one of each always-unset family).
fn all_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
    names.extend([
        "authorizer.claims.sub",
        "authorize.status",
        "authenticate.error",
        "wafResponseCode",
        "identity.clientCert.clientCertPem",
    ]);
    names
}

/// The value a variable should log for `rec`, unescaped: a model written
/// apart from [`LogFormat::write`].
fn expected(name: &str, rec: &LogRecord<'_>) -> Vec<u8> {
    fn or_dash(v: &[u8]) -> Vec<u8> {
        if v.is_empty() {
            b"-".to_vec()
        } else {
            v.to_vec()
        }
    }
    let s = |v: Option<&str>| or_dash(v.unwrap_or("").as_bytes());
    let b = |v: Option<&[u8]>| or_dash(v.unwrap_or(b""));
    let n = |v: Option<u64>| v.map_or(b"-".to_vec(), |v| v.to_string().into_bytes());
    match lookup(name).unwrap() {
        Var::RequestId => b(Some(rec.request_id)),
        Var::ExtendedRequestId => b(rec.extended_request_id),
        Var::SourceIp => rec
            .source_ip
            .map_or(b"-".to_vec(), |ip| ip.to_string().into_bytes()),
        Var::UserAgent => b(rec.user_agent),
        Var::ApiKeyId => s(rec.api_key_id),
        Var::HttpMethod => b(Some(rec.method)),
        Var::ResourcePath => s(rec.resource_path),
        Var::RouteKey => match rec.resource_path {
            Some(t) if !t.is_empty() => [rec.method, b" ", t.as_bytes()].concat(),
            _ => b"-".to_vec(),
        },
        Var::Path => b(Some(rec.path)),
        Var::Stage => s(rec.stage),
        Var::ApiId => s(rec.api_id),
        Var::ResourceId => s(rec.resource_id),
        Var::AccountId => s(rec.account_id),
        Var::DomainName => b(rec.host.map(without_port)),
        Var::DomainPrefix => b(rec
            .host
            .map(without_port)
            .map(|d| &d[..d.iter().position(|&c| c == b'.').unwrap_or(d.len())])),
        Var::Protocol => s(Some(rec.protocol)),
        Var::RequestTime => {
            // From the Date header's formatter: "Sun, 06 Nov 1994 08:49:37 GMT".
            let d = HttpDate::from_unix(rec.request_time_ms / 1000);
            let d = std::str::from_utf8(d.as_bytes()).unwrap().to_string();
            format!(
                "{}/{}/{}:{} +0000",
                &d[5..7],
                &d[8..11],
                &d[12..16],
                &d[17..25]
            )
            .into_bytes()
        }
        Var::RequestTimeEpoch => n(Some(rec.request_time_ms)),
        Var::Status => n((rec.status != 0).then_some(rec.status.into())),
        Var::ResponseLength => n(rec.response_length),
        Var::ResponseLatency => n(Some(rec.response_latency_us / 1000)),
        Var::IntegrationLatency => n(rec.integration_latency_us.map(|u| u / 1000)),
        Var::IntegrationStatus => n(rec.integration_status.map(u64::from)),
        Var::IntegrationError => s(rec.integration_error),
        Var::ErrorMessage => s(rec.error_message),
        Var::ErrorResponseType => s(rec.error_response_type),
        Var::BasePathMatched => s(rec.base_path_matched),
        Var::IsCanaryRequest => rec.is_canary.to_string().into_bytes(),
        Var::Outcome => s(Some(rec.outcome)),
        Var::ClientCertPem => s(rec.client_cert.map(|c| c.pem.as_str())),
        Var::ClientCertSubject => s(rec.client_cert.map(|c| c.subject_dn.as_str())),
        Var::ClientCertIssuer => s(rec.client_cert.map(|c| c.issuer_dn.as_str())),
        Var::ClientCertSerial => s(rec.client_cert.map(|c| c.serial_number.as_str())),
        Var::ClientCertNotBefore => s(rec.client_cert.map(|c| c.not_before.as_str())),
        Var::ClientCertNotAfter => s(rec.client_cert.map(|c| c.not_after.as_str())),
        Var::Unset => b"-".to_vec(),
    }
}

/// The ids and the client: request id, extended id, address, user agent.
type Ids = (Vec<u8>, Option<Vec<u8>>, Option<IpAddr>, Option<Vec<u8>>);
/// Method, route template, path, domain, protocol index.
type Request = (Vec<u8>, Option<String>, Vec<u8>, Option<Vec<u8>>, usize);
/// Time, status, length, latency, integration latency and status,
/// canary, outcome index.
type Numbers = (
    u64,
    u16,
    Option<u64>,
    u64,
    Option<u64>,
    Option<u16>,
    bool,
    usize,
);

/// A record's values, owned, as proptest makes them.
#[derive(Debug, Clone)]
struct Owned {
    ids: Ids,
    request: Request,
    names: [Option<String>; 9],
    numbers: Numbers,
    /// A client certificate's fields, hostile text included.
    cert: Option<ClientCertFields>,
}

const PROTOCOLS: [&str; 3] = ["HTTP/1.1", "HTTP/1.0", ""];
const OUTCOMES: [&str; 3] = ["proxied", "error_not_found", ""];

impl Owned {
    fn record(&self) -> LogRecord<'_> {
        let n = &self.names;
        let s = |i: usize| n[i].as_deref();
        LogRecord {
            request_id: &self.ids.0,
            extended_request_id: self.ids.1.as_deref(),
            source_ip: self.ids.2,
            source_ip_text: None,
            tokens_checked: false,
            user_agent: self.ids.3.as_deref(),
            method: &self.request.0,
            resource_path: self.request.1.as_deref(),
            path: &self.request.2,
            host: self.request.3.as_deref(),
            protocol: PROTOCOLS[self.request.4],
            api_key_id: s(0),
            stage: s(1),
            api_id: s(2),
            resource_id: s(3),
            account_id: s(4),
            integration_error: s(5),
            error_message: s(6),
            error_response_type: s(7),
            base_path_matched: s(8),
            request_time_ms: self.numbers.0,
            status: self.numbers.1,
            response_length: self.numbers.2,
            response_latency_us: self.numbers.3,
            integration_latency_us: self.numbers.4,
            integration_status: self.numbers.5,
            is_canary: self.numbers.6,
            outcome: OUTCOMES[self.numbers.7],
            client_cert: self.cert.as_ref(),
        }
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        // Mostly the bytes escaping cares about.
        proptest::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b','),
                Just(b'\n'),
                Just(b'\r'),
                Just(b' '),
                Just(b'.'),
                Just(0u8),
                Just(0x7f),
                Just(0xff),
                any::<u8>()
            ],
            0..24
        ),
    ]
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(?s).{0,16}").unwrap()
}

fn owned() -> impl Strategy<Value = Owned> {
    let ids = (
        bytes(),
        proptest::option::of(bytes()),
        proptest::option::of(any::<IpAddr>()),
        proptest::option::of(bytes()),
    );
    let request = (
        bytes(),
        proptest::option::of(text()),
        bytes(),
        proptest::option::of(bytes()),
        0..PROTOCOLS.len(),
    );
    let names = proptest::array::uniform9(proptest::option::of(text()));
    let numbers = (
        0u64..8_000_000_000_000,
        any::<u16>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u16>()),
        any::<bool>(),
        0..OUTCOMES.len(),
    );
    let cert = proptest::option::of(proptest::array::uniform6(text()).prop_map(|t| {
        let [pem, subject_dn, issuer_dn, serial_number, not_before, not_after] = t;
        ClientCertFields {
            pem,
            subject_dn,
            issuer_dn,
            serial_number,
            not_before,
            not_after,
        }
    }));
    (ids, request, names, numbers, cert).prop_map(|(ids, request, names, numbers, cert)| Owned {
        ids,
        request,
        names,
        numbers,
        cert,
    })
}

/// Undoes CLF escaping (`\xHH`; a `\` is always escaped).
fn clf_unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' {
            assert_eq!(v[i + 1], b'x');
            let hex = std::str::from_utf8(&v[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]
    /// JSON mode: any values give one ASCII line of valid JSON from which
    /// every value's exact bytes come back.
    #[test]
    fn json_lines_are_valid_and_exact(o in owned()) {
        let names = all_names();
        let body: Vec<String> = names.iter().map(|n| format!("\"{n}\":\"$context.{n}\"")).collect();
        let f = LogFormat::parse(&format!("{{{}}}", body.join(","))).unwrap();
        prop_assert_eq!(f.escape(), Escape::Json);
        let rec = o.record();
        let out = line(&f, &rec);
        prop_assert!(out.is_ascii());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for n in &names {
            prop_assert_eq!(json_bytes(&v[*n]), expected(n, &rec), "{}", n);
        }
        // And the presets, with unquoted numbers nowhere: valid too.
        let out = line(&preset("json"), &rec);
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }

    /// CSV mode: any values read back as exactly the original fields.
    #[test]
    fn csv_lines_read_back_exactly(o in owned()) {
        let names = all_names();
        let vars: Vec<String> = names.iter().map(|n| format!("$context.{n}")).collect();
        let f = LogFormat::parse(&vars.join(",")).unwrap().with_escape(Escape::Csv);
        let rec = o.record();
        let out = line_csv(&f, &rec);
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(&out[..]);
        let rows: Vec<csv::ByteRecord> = r.byte_records().map(Result::unwrap).collect();
        prop_assert_eq!(rows.len(), 1);
        prop_assert_eq!(rows[0].len(), names.len());
        for (field, n) in rows[0].iter().zip(&names) {
            prop_assert_eq!(field, &expected(n, &rec)[..], "{}", n);
        }
        let out = line_csv(&preset("csv"), &rec);
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(&out[..]);
        prop_assert_eq!(r.byte_records().next().unwrap().unwrap().len(), 11);
    }

    /// CLF mode: no raw quote inside a value, no raw line break or control
    /// or non-ASCII byte anywhere; unescaping gives the values back.
    #[test]
    fn clf_lines_stay_quoted_and_on_one_line(o in owned()) {
        let names = all_names();
        let vars: Vec<String> = names.iter().map(|n| format!("\"$context.{n}\"")).collect();
        let f = LogFormat::parse(&vars.join(" ")).unwrap();
        prop_assert_eq!(f.escape(), Escape::Clf);
        let rec = o.record();
        let out = line(&f, &rec);
        let body = &out[..out.len() - 1];
        prop_assert!(body.iter().all(|&b| (0x20..0x7f).contains(&b)));
        prop_assert_eq!(body.iter().filter(|&&b| b == b'"').count(), 2 * names.len());
        let inner = &body[1..body.len() - 1];
        let values: Vec<&[u8]> = inner.split(|&b| b == b'"').step_by(2).collect();
        prop_assert_eq!(values.len(), names.len());
        for (v, n) in values.iter().zip(&names) {
            prop_assert_eq!(clf_unescape(v), expected(n, &rec), "{}", n);
        }
        let re = regex::bytes::Regex::new(HTTP_API_CLF_RE).unwrap();
        let out = line(&preset("http_api_clf"), &LogRecord {
            // The regex's fields are space-free: keep the spaces out.
            method: b"GET",
            resource_path: Some("/r"),
            status: 100 + rec.status % 500,
            ..rec
        });
        prop_assert!(re.is_match(&out), "{}", String::from_utf8_lossy(&out));
    }
}

/// A CSV line: one record, which may hold quoted line breaks.
fn line_csv(format: &LogFormat, rec: &LogRecord<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    format.write(rec, &mut ClfClock::new(), &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    out
}

#[test]
fn word_check_agrees_with_the_byte_check() {
    for b in 0..=255u8 {
        for pos in 0..8 {
            let mut w = *b"abcdefgh";
            w[pos] = b;
            assert_eq!(
                word_plain(u64::from_le_bytes(w)),
                plain(b),
                "byte {b:#x} at {pos}"
            );
        }
    }
    // Neighbours that borrow or carry: 0xff, 0x00, 0x7f around each other.
    for a in [
        0x00u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff, b'"', b'\\', b'a',
    ] {
        for b in [
            0x00u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff, b'"', b'\\', b'a',
        ] {
            let w = [a, b, a, b, b, a, b, a];
            assert_eq!(
                word_plain(u64::from_le_bytes(w)),
                w.iter().all(|&x| plain(x)),
                "{w:?}"
            );
        }
    }
}

proptest::proptest! {
    #![proptest_config(crate::proptest_config(256))]
    #[test]
    fn all_plain_agrees_with_the_byte_check(v in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
        proptest::prop_assert_eq!(all_plain(&v), v.iter().all(|&b| plain(b)));
    }
}

/// The oracle's port cut: a host ending in `:digits` (not inside an IPv6
/// literal's brackets) loses them.
fn without_port(h: &[u8]) -> &[u8] {
    let mut halves = h.rsplitn(2, |&c| c == b':');
    match (halves.next(), halves.next()) {
        (Some(port), Some(name)) if !port.contains(&b']') => name,
        _ => h,
    }
}

#[test]
fn ports_are_cut_off() {
    assert_eq!(domain_name(b"shop.example:8080"), b"shop.example");
    assert_eq!(domain_name(b"shop.example"), b"shop.example");
    assert_eq!(domain_name(b"[::1]:8080"), b"[::1]");
    assert_eq!(domain_name(b"[::1]"), b"[::1]");
    assert_eq!(domain_name(b":"), b"");
    assert_eq!(domain_name(b""), b"");
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]
    /// Any Host bytes: no panic, and the answer is a prefix of them.
    #[test]
    fn any_host_gives_a_prefix(host in proptest::collection::vec(any::<u8>(), 0..64)) {
        let out = domain_name(&host);
        prop_assert!(host.starts_with(out));
    }
}

/// `tokens_checked`: the bytes of an id token and of a method (an RFC 9110
/// token) need no escape in any mode, so the line is the same with the
/// check skipped, whatever the route template holds.
#[test]
fn token_ids_are_written_as_they_are() {
    let token_bytes = b"ABCXYZabcxyz0123456789._:+/=-";
    let tchar = b"!#$%&'*+-.^_`|~ABCXYZabcxyz0123456789";
    for &b in token_bytes.iter().chain(tchar) {
        assert!(plain(b), "{}", b as char);
        assert!(!matches!(b, b',' | b'"' | b'\r' | b'\n'));
    }
    let custom = "$context.requestId $context.httpMethod $context.routeKey $context.protocol";
    for setting in ["clf", "json", "csv", "http_api_clf", custom] {
        let preset = setting;
        let f = LogFormat::from_setting(setting).unwrap();
        let mut rec = LogRecord::new(b"Root=1-5e1b.4:+/=-x_y", 1_700_000_000_000);
        rec.extended_request_id = Some(b"abc-123");
        rec.method = tchar;
        rec.resource_path = Some("/a,\"b\"\\{c}\n");
        rec.protocol = "HTTP/1.0";
        let (mut checked, mut trusted) = (Vec::new(), Vec::new());
        f.write(&rec, &mut ClfClock::new(), &mut checked);
        rec.tokens_checked = true;
        f.write(&rec, &mut ClfClock::new(), &mut trusted);
        assert_eq!(checked, trusted, "{preset}");
    }
}

/// The client certificate's dates, as OpenSSL prints them.
#[test]
fn openssl_dates() {
    assert_eq!(openssl_time(784_111_777), "Nov  6 08:49:37 1994 GMT");
    assert_eq!(openssl_time(0), "Jan  1 00:00:00 1970 GMT");
    assert_eq!(openssl_time(1_559_046_602), "May 28 12:30:02 2019 GMT");
    assert_eq!(openssl_time(-1), "Dec 31 23:59:59 1969 GMT");
}
