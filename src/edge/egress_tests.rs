use super::*;
use crate::decision::{DenyReason, DenyResponse, HttpStatus, PolicyAnswer};

fn verdict(decision: Decision) -> Verdict {
    Verdict {
        decision,
        decision_id: "d-1".into(),
        revision: None,
        facts: Default::default(),
        pause: None,
        spends_approval: None,
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

fn metadata_string(resp: &CheckResponse, key: &str) -> Option<String> {
    match resp
        .dynamic_metadata
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[test]
#[allow(deprecated, reason = "asserting the field Envoy reads")]
fn an_allow_sets_headers_then_appends_repeats() {
    // Only a policy's result, read, makes a permit.
    let answer = crate::policy::outcome::read(
        &crate::policy::Value::from_json_str(
            r#"{"allowed": true, "headers": {"x-a": ["1", "2"], "x-b": "3"},
                "response_headers_to_add": {"x-r": "r"}, "request_headers_to_remove": ["authorization"],
                "query_parameters_to_set": {"q": "1"}, "query_parameters_to_remove": ["s"],
                "dynamic_metadata": {"route": "r1"}}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let decision = Decision::from_policy(answer);
    let resp = response(&verdict(decision), &EgressOptions::default());
    assert_eq!(resp.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
        panic!()
    };
    let appends: Vec<(String, bool)> = ok
        .headers
        .iter()
        .map(|h| {
            (
                h.header.as_ref().unwrap().key.clone(),
                h.append.is_some_and(|a| a.value),
            )
        })
        .collect();
    assert_eq!(
        appends,
        vec![
            ("x-a".into(), false),
            ("x-a".into(), true),
            ("x-b".into(), false)
        ]
    );
    assert_eq!(ok.headers_to_remove, vec!["authorization".to_owned()]);
    assert_eq!(ok.response_headers_to_add.len(), 1);
    assert_eq!(ok.query_parameters_to_set[0].key, "q");
    assert_eq!(ok.query_parameters_to_remove, vec!["s".to_owned()]);
    assert_eq!(
        metadata_string(&resp, "decision_id").as_deref(),
        Some("d-1")
    );
    assert_eq!(metadata_string(&resp, "route").as_deref(), Some("r1"));
    assert_eq!(metadata_string(&resp, "leash_reason"), None);
}

#[test]
fn a_policy_denial_sends_its_status_body_and_headers() {
    let decision = Decision::from_policy(PolicyAnswer::Deny {
        response: DenyResponse {
            status: HttpStatus::new(401).unwrap(),
            headers: vec![header("www-authenticate", "Bearer")],
            body: "no".into(),
        },
        metadata: Metadata::new(),
        stated_reason: None,
    });
    let resp = response(&verdict(decision), &EgressOptions::default());
    assert_eq!(
        resp.status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );
    let Some(HttpResponse::DeniedResponse(denied)) = &resp.http_response else {
        panic!()
    };
    assert_eq!(denied.status.as_ref().unwrap().code, 401);
    assert_eq!(denied.body, "no");
    assert_eq!(denied.headers.len(), 1);
    assert_eq!(
        metadata_string(&resp, "leash_reason").as_deref(),
        Some("policy.denied")
    );
}

#[test]
fn the_reason_header_is_added_only_when_configured() {
    let decision = Decision::deny(DenyReason::RequestBodyTooDeep, "deep");
    let options = EgressOptions {
        reason_header: Some("x-leash-reason".into()),
    };
    let resp = response(&verdict(decision.clone()), &options);
    let Some(HttpResponse::DeniedResponse(denied)) = &resp.http_response else {
        panic!()
    };
    assert_eq!(denied.status.as_ref().unwrap().code, 403);
    let h = denied.headers[0].header.as_ref().unwrap();
    assert_eq!(
        (h.key.as_str(), h.value.as_str()),
        ("x-leash-reason", "request.body_too_deep")
    );

    let resp = response(&verdict(decision), &EgressOptions::default());
    let Some(HttpResponse::DeniedResponse(denied)) = &resp.http_response else {
        panic!()
    };
    assert!(denied.headers.is_empty());
}

#[test]
fn leashs_status_table_matches_envoys_enum() {
    use envoy_types::pb::envoy::r#type::v3::StatusCode;
    for code in 0..=1000_i32 {
        let envoy_knows = StatusCode::try_from(code).is_ok_and(|c| c != StatusCode::Empty);
        assert_eq!(
            HttpStatus::new(i64::from(code)).is_some(),
            envoy_knows,
            "status {code}"
        );
    }
}
