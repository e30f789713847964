//! Unit tests of the import's pieces.

use super::*;

#[test]
fn api_names_from_titles() {
    assert_eq!(api_name("PetStore"), "PetStore");
    assert_eq!(api_name("Pet Store"), "pet-store");
    assert_eq!(api_name("  My API (v2)!"), "my-api-v2");
    assert_eq!(api_name("été"), "t");
    assert_eq!(api_name("???"), "imported");
    assert_eq!(api_name(&"x".repeat(100)).len(), 64);
}

#[test]
fn ports_are_seen() {
    assert!(has_port("a.example.com:8080"));
    assert!(has_port("[::1]:80"));
    assert!(!has_port("[::1]"));
    assert!(!has_port("a.example.com"));
    assert!(!has_port("a:"));
    assert!(!has_port("a:8x"));
}

#[test]
fn shapes_erase_parameter_names() {
    assert_eq!(route_shape("GET /a/{id}"), route_shape("GET /a/{petId}"));
    assert_ne!(route_shape("GET /a/{id}"), route_shape("GET /a/{id+}"));
    assert_ne!(route_shape("GET /a/{id}"), route_shape("ANY /a/{id}"));
}

#[test]
fn selection_patterns_are_whole_matches() {
    assert_eq!(selection_matches(r"2\d{2}", "201"), Some(true));
    assert_eq!(selection_matches(r"2\d{2}", "2010"), Some(false));
    assert_eq!(selection_matches("4\\d{2}|5\\d{2}", "503"), Some(true));
    assert_eq!(selection_matches(".*", "200"), Some(true));
    assert_eq!(selection_matches("(", "200"), None);
    // Larger than the size cap: refused, not compiled.
    assert_eq!(selection_matches("a{1000}{1000}", "a"), None);
}

#[test]
fn vtl_stage_variables_and_parameters_are_converted() {
    let params = vec!["id".to_string()];
    let (out, left) = convert_vtl(
        "{\"env\": \"$stageVariables.env\", \"v\": \"$stageVariables['ver']\", \
         \"w\": \"${stageVariables.w}\", \"id\": \"$input.params('id')\", \
         \"p\": \"$input.params().path.get('id')\"}",
        &params,
    );
    assert_eq!(
        out,
        "{\"env\": \"${stageVariables.env}\", \"v\": \"${stageVariables.ver}\", \
         \"w\": \"${stageVariables.w}\", \"id\": \"{id}\", \"p\": \"{id}\"}"
    );
    assert!(!left);
    let (out, left) = convert_vtl("$input.params('other') $context.stage", &params);
    assert_eq!(out, "$input.params('other') $context.stage");
    assert!(left);
    let (_, left) = convert_vtl("#set($x = 1)", &params);
    assert!(left);
}

#[test]
fn stage_variables_are_listed() {
    assert_eq!(
        stage_variables("a ${stageVariables.x} b ${stageVariables.y_2} ${stageVariables."),
        vec!["x".to_string(), "y_2".to_string()]
    );
}

#[test]
fn sources_of_request_parameters() {
    let params = vec!["petId".to_string()];
    assert_eq!(
        Source::parse("method.request.path.petId", &params)
            .text()
            .as_deref(),
        Some("{petId}")
    );
    assert_eq!(
        Source::parse("method.request.path.nope", &params).text(),
        None
    );
    assert_eq!(
        Source::parse("'a b/c'", &params).text().as_deref(),
        Some("a%20b%2Fc")
    );
    assert_eq!(
        Source::parse("stageVariables.host", &params)
            .text()
            .as_deref(),
        Some("${stageVariables.host}")
    );
    assert_eq!(Source::parse("context.requestId", &params).text(), None);
    assert!(matches!(
        Source::parse("method.request.querystring.type", &params),
        Source::Query(q) if q == "type"
    ));
}

#[test]
fn route_indices_from_error_keys() {
    assert_eq!(route_index("api[0].route[12].mock.status"), Some(12));
    assert_eq!(route_index("api[0].route[3]"), Some(3));
    assert_eq!(route_index("api[0].stage[0].variables"), None);
    assert_eq!(route_index("domain[0].host"), None);
}
