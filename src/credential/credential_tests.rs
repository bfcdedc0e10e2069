use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value as Json;

use super::*;
use crate::view::RequestView;

/// A fixed moment, as the edge's clock would give it.
const NOW: i64 = 1_800_000_000;

fn minter(rules: Vec<MintRule>) -> Minter {
    let settings = CredentialSettings {
        issuer: "https://leash.test".into(),
        rules,
        rotation_grace: Duration::ZERO,
        ..CredentialSettings::default()
    };
    Minter::new(
        settings,
        KeyRing::new(Signer::generate(SigningAlgorithm::EdDSA).unwrap()),
    )
}

fn tool(name: &str) -> Resource {
    Resource {
        kind: ResourceKind::Tool,
        name: Arc::from(name),
    }
}

fn call<'a>(resource: &'a Resource, chain: &'a [String]) -> Invocation<'a> {
    Invocation {
        human: Some("alice"),
        agent: "planner",
        chain,
        task: Some("t-1"),
        resource,
        class: ActionClass::Write,
        audience: "mcp.example",
        not_after: None,
        now: NOW,
    }
}

/// The claims of `token`, verified with the minter's JWKS at `at` (Unix seconds), as a
/// tool's standard library would: audience `aud`, no leeway.
fn verify_at(minter: &Minter, token: &str, aud: &str, at: i64) -> Result<Json, String> {
    let set: JwkSet = serde_json::from_value(minter.ring().jwks(at)).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .ok_or("unknown kid")?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[aud]);
    validation.leeway = 0;
    validation.validate_exp = false;
    let claims =
        jsonwebtoken::decode::<Json>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .map_err(|e| e.to_string())?
            .claims;
    // jsonwebtoken reads the wall clock; the expiry is checked against `at`.
    if claims["exp"].as_i64().unwrap() <= at {
        return Err("expired".into());
    }
    Ok(claims)
}

fn token(credential: &crate::effects::Credential) -> &str {
    credential.value.strip_prefix("Bearer ").unwrap()
}

#[test]
fn a_credential_names_this_call_and_nothing_wider() {
    let minter = minter(vec![MintRule {
        resources: vec![ResourcePattern::Kind(ResourceKind::Tool)],
        ..MintRule::default()
    }]);
    let resource = tool("create_issue");
    let chain = vec!["planner".to_owned(), "orchestrator".to_owned()];
    let rule = minter.rule_for(&resource);
    assert!(rule.is_some());
    let credential = minter.mint(&call(&resource, &chain), rule, None).unwrap();
    let claims = verify_at(&minter, token(&credential), "mcp.example", NOW).unwrap();
    assert_eq!(claims["iss"], "https://leash.test");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["act"],
        serde_json::json!({"sub": "planner", "act": {"sub": "orchestrator"}})
    );
    assert_eq!(claims["scope"], "tool:create_issue:write");
    assert_eq!(claims["task_id"], "t-1");
    assert_eq!(claims["client_id"], "planner");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 60);
    assert_eq!(claims["jti"].as_str(), Some(credential.jti.as_ref()));
    assert_eq!(credential.header.as_ref(), "authorization");
    assert_eq!(&*credential.remove, ["dpop", "txn-token"]);
    // Another audience does not take it.
    assert!(verify_at(&minter, token(&credential), "other.example", NOW).is_err());
}

#[test]
fn a_credential_is_expired_after_its_ttl() {
    let minter = minter(Vec::new());
    let resource = tool("search");
    let credential = minter
        .mint(&call(&resource, &[]), None, Some(&MintAsk::default()))
        .unwrap();
    let jwt = token(&credential);
    assert!(verify_at(&minter, jwt, "mcp.example", NOW + 59).is_ok());
    assert_eq!(
        verify_at(&minter, jwt, "mcp.example", NOW + 60),
        Err("expired".into())
    );
}

#[test]
fn a_credential_never_outlives_the_token_or_the_approval_behind_it() {
    let minter = minter(Vec::new());
    let resource = tool("search");
    let mut invocation = call(&resource, &[]);
    invocation.not_after = Some(NOW + 7);
    let credential = minter
        .mint(&invocation, None, Some(&MintAsk::default()))
        .unwrap();
    assert_eq!(credential.exp, NOW + 7);
    invocation.not_after = Some(NOW);
    assert!(matches!(
        minter.mint(&invocation, None, Some(&MintAsk::default())),
        Err(MintError::Failed(_))
    ));
}

#[test]
fn without_a_human_the_agent_is_the_subject() {
    let minter = minter(Vec::new());
    let resource = tool("search");
    let mut invocation = call(&resource, &[]);
    invocation.human = None;
    let credential = minter
        .mint(&invocation, None, Some(&MintAsk::default()))
        .unwrap();
    let claims = verify_at(&minter, token(&credential), "mcp.example", NOW).unwrap();
    assert_eq!(claims["sub"], "planner");
    assert!(claims.get("act").is_none());
    // With a human and no chain in the token, the agent is the one actor.
    invocation.human = Some("alice");
    let credential = minter
        .mint(&invocation, None, Some(&MintAsk::default()))
        .unwrap();
    let claims = verify_at(&minter, token(&credential), "mcp.example", NOW).unwrap();
    assert_eq!(claims["act"], serde_json::json!({"sub": "planner"}));
}

#[test]
fn the_policy_may_narrow_the_claims_but_never_widen_them() {
    let minter = minter(vec![MintRule {
        resources: vec![ResourcePattern::Any],
        audience: Some("https://tools.internal".into()),
        ttl: Some(Duration::from_secs(30)),
    }]);
    let resource = tool("create_issue");
    let invocation = call(&resource, &[]);
    let rule = minter.rule_for(&resource);
    let ask = |ttl: Option<u64>, audience: Option<&str>, scope: Option<&[&str]>| MintAsk {
        ttl,
        audience: audience.map(str::to_owned),
        scope: scope.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
    };
    let narrowed = minter
        .mint(
            &invocation,
            rule,
            Some(&ask(
                Some(5),
                Some("https://tools.internal"),
                Some(&["tool:create_issue:read"]),
            )),
        )
        .unwrap();
    let claims = verify_at(&minter, token(&narrowed), "https://tools.internal", NOW).unwrap();
    assert_eq!(claims["exp"], NOW + 5);
    assert_eq!(claims["scope"], "tool:create_issue:read");
    for wider in [
        ask(Some(31), None, None),
        ask(Some(0), None, None),
        ask(None, Some("https://everything.internal"), None),
        ask(None, None, Some(&["tool:create_issue:destructive"])),
        ask(None, None, Some(&["tool:*:write"])),
        ask(None, None, Some(&["tool:delete_repo:read"])),
        ask(None, None, Some(&["tool:create_issue:write", "admin"])),
    ] {
        assert!(
            matches!(
                minter.mint(&invocation, rule, Some(&wider)),
                Err(MintError::Widening(_))
            ),
            "{wider:?}"
        );
    }
}

#[test]
fn a_resource_name_that_would_read_as_several_scopes_gets_no_credential() {
    let minter = minter(Vec::new());
    let resource = Resource {
        kind: ResourceKind::Resource,
        name: Arc::from("x tool:delete_repo:destructive y"),
    };
    assert!(matches!(
        minter.mint(&call(&resource, &[]), None, Some(&MintAsk::default())),
        Err(MintError::Failed(_))
    ));
}

#[test]
fn configured_rules_match_by_resource() {
    let parse = |s| ResourcePattern::parse(s).unwrap();
    assert_eq!(parse("*"), ResourcePattern::Any);
    assert_eq!(parse("tool:*"), ResourcePattern::Kind(ResourceKind::Tool));
    assert_eq!(
        parse("rule:crm"),
        ResourcePattern::Exact(ResourceKind::Rule, "crm".into())
    );
    for bad in ["tool", "tool:", "bogus:x", ""] {
        assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
    }
    let minter = minter(vec![MintRule {
        resources: vec![parse("tool:create_issue"), parse("host:*")],
        ..MintRule::default()
    }]);
    assert!(minter.rule_for(&tool("create_issue")).is_some());
    assert!(minter.rule_for(&tool("search")).is_none());
    assert!(
        minter
            .rule_for(&Resource {
                kind: ResourceKind::Host,
                name: Arc::from("crm")
            })
            .is_some()
    );
}

#[test]
fn a_rotation_keeps_the_old_key_published_until_its_credentials_expire() {
    let minter = minter(Vec::new());
    let resource = tool("search");
    let old = minter
        .mint(&call(&resource, &[]), None, Some(&MintAsk::default()))
        .unwrap();
    assert!(minter.rotate(Signer::generate(SigningAlgorithm::EdDSA).unwrap(), NOW + 10));
    let new = minter
        .mint(&call(&resource, &[]), None, Some(&MintAsk::default()))
        .unwrap();
    assert_ne!(old.kid, new.kid);
    // Both verify while the old credential lives ...
    assert!(verify_at(&minter, token(&old), "mcp.example", NOW + 59).is_ok());
    assert!(verify_at(&minter, token(&new), "mcp.example", NOW + 59).is_ok());
    // ... then its key leaves the JWKS (a TTL after the rotation at NOW + 10).
    let kids = |at: i64| {
        minter.ring().jwks(at)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(kids(NOW + 70).contains(&old.kid.to_string()));
    assert_eq!(kids(NOW + 71), [new.kid.to_string()]);
}

fn view(path: &str, headers: &[(&str, &str)], body: &str) -> RequestView {
    let mut view = RequestView::for_test("POST", "https", "mcp.example", path, headers);
    view.body = crate::view::Body::Text(body.to_owned());
    view
}

const AGENT_TOKEN: &str =
    "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLW9mLXRoZS1hZ2VudHMtdG9rZW4";
const SIGNATURE: &str = "c2lnbmF0dXJlLW9mLXRoZS1hZ2VudHMtdG9rZW4";

#[test]
fn the_agents_token_anywhere_else_is_found() {
    let bearer = format!("Bearer {AGENT_TOKEN}");
    let replaced = ["authorization", "dpop", "txn-token"];
    let exposed_in = |path: &str, extra: &[(&str, &str)], body: &str| {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let v = view(path, &headers, body);
        exposed(&v, path.split('?').next().unwrap(), &replaced)
    };
    assert_eq!(exposed_in("/mcp", &[], r#"{"q":"x"}"#), None);
    assert_eq!(
        exposed_in("/mcp?access_token=anything", &[], ""),
        Some(Exposure::Parameter("query"))
    );
    assert_eq!(
        exposed_in("/mcp?access%5Ftoken=anything", &[], ""),
        Some(Exposure::Parameter("query"))
    );
    assert_eq!(
        exposed_in(&format!("/mcp?t={SIGNATURE}"), &[], ""),
        Some(Exposure::Copy("query".into()))
    );
    assert_eq!(
        exposed_in(&format!("/mcp/{SIGNATURE}"), &[], ""),
        Some(Exposure::Copy("path".into()))
    );
    assert_eq!(
        exposed_in("/mcp", &[("x-api-key", AGENT_TOKEN)], ""),
        Some(Exposure::Copy("x-api-key header".into()))
    );
    assert_eq!(
        exposed_in("/mcp", &[], &format!(r#"{{"token":"{AGENT_TOKEN}"}}"#)),
        Some(Exposure::Copy("body".into()))
    );
    // Escaped so that no byte run matches, as the tool's JSON parser reads it back.
    let escaped: String = SIGNATURE
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    assert_eq!(
        exposed_in("/mcp", &[], &format!(r#"{{"token":"{escaped}"}}"#)),
        Some(Exposure::Copy("body".into()))
    );
    // Escaped in a body no JSON parser accepts (a trailing comma), which a lenient
    // one still reads.
    assert_eq!(
        exposed_in("/mcp", &[], &format!(r#"{{"token":"{escaped}",}}"#)),
        Some(Exposure::Copy("body".into()))
    );
    // In the path as sent, where the canonical path lost it to a dot segment.
    let v = view(
        &format!("/a/{SIGNATURE}/../b"),
        &[("authorization", bearer.as_str())],
        "",
    );
    assert_eq!(
        exposed(&v, "/a/b", &replaced),
        Some(Exposure::Copy("path".into()))
    );
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        exposed_in("/mcp", &form, "a=1&access_token=x"),
        Some(Exposure::Parameter("form body"))
    );
    let encoded: String = SIGNATURE.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(
        exposed_in("/mcp", &form, &format!("t={encoded}")),
        Some(Exposure::Copy("form body".into()))
    );
}
