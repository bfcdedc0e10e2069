use super::*;
use crate::token::issuer::{IssuerConfig, KeySource, TokenKind};

fn issuer(human: HumanRule) -> IssuerConfig {
    IssuerConfig {
        issuer: "https://idp".into(),
        human,
        grant_type_claim: Some("gty".into()),
        machine_grant_types: vec!["client-credentials".into()],
        kind: TokenKind::Access,
        audiences: vec!["tools".into()],
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
        keys: KeySource::None,
        hmac_secret: None,
        max_lifetime: std::time::Duration::from_secs(900),
        leeway: std::time::Duration::from_secs(30),
        task_claim: "task_id".into(),
        workload_claim: Some("spiffe_id".into()),
        require_workload_binding: true,
        refresh: std::time::Duration::from_secs(300),
        min_refetch: std::time::Duration::from_secs(30),
    }
}

fn read_with(rule: HumanRule, json: Value) -> AgentClaims {
    AgentClaims::read(json.as_object().unwrap(), &issuer(rule)).unwrap()
}

fn read(json: Value) -> AgentClaims {
    read_with(HumanRule::Delegation, json)
}

#[test]
fn a_nested_act_chain_names_the_current_actor_first() {
    let c = read(serde_json::json!({
        "sub": "alice",
        "act": {"sub": "planner-agent", "act": {"sub": "orchestrator", "act": {"client_id": "ui"}}},
        "scope": "tool:search:read tool:crm:write",
        "task_id": "t-1",
    }));
    assert_eq!(c.human.as_deref(), Some("alice"));
    assert_eq!(c.agent.as_deref(), Some("planner-agent"));
    assert_eq!(c.chain, vec!["planner-agent", "orchestrator", "ui"]);
    assert_eq!(c.depth(), 3);
    assert_eq!(c.scopes, vec!["tool:search:read", "tool:crm:write"]);
    assert_eq!(c.task.as_deref(), Some("t-1"));
}

#[test]
fn a_client_acting_for_a_user_is_the_agent_and_the_user_a_human_only_where_configured() {
    let token = serde_json::json!({"sub": "alice", "client_id": "agent-7", "scp": ["a", "b"]});
    let c = read(token.clone());
    assert_eq!(
        (c.human.as_deref(), c.agent.as_deref()),
        (None, Some("agent-7"))
    );
    assert_eq!(c.scopes, vec!["a", "b"]);
    let c = read_with(HumanRule::Client, token);
    assert_eq!(
        (c.human.as_deref(), c.agent.as_deref()),
        (Some("alice"), Some("agent-7"))
    );
}

#[test]
fn self_delegation_names_no_human() {
    let c = read(serde_json::json!({"sub": "agent-7", "act": {"sub": "agent-7"}}));
    assert_eq!(c.human, None);
    let c = read(serde_json::json!({"sub": "b", "act": {"sub": "a", "act": {"sub": "b"}}}));
    assert_eq!(c.human, None, "the subject acts further down the chain");
}

#[test]
fn a_client_credentials_token_has_no_human_whatever_the_rule() {
    // Keycloak-style: the service account is the subject, the client is azp.
    let token =
        serde_json::json!({"sub": "svc-account-1", "azp": "agent-7", "gty": "client-credentials"});
    for rule in [
        HumanRule::Delegation,
        HumanRule::Client,
        HumanRule::Claim("sub".into()),
    ] {
        assert_eq!(
            read_with(rule.clone(), token.clone()).human,
            None,
            "{rule:?}"
        );
    }
    let no_gty = serde_json::json!({"sub": "svc-account-1", "azp": "agent-7"});
    assert_eq!(read(no_gty).human, None, "the default rule needs act");
}

#[test]
fn a_configured_claim_names_the_human() {
    let c = read_with(
        HumanRule::Claim("email".into()),
        serde_json::json!({"sub": "x", "email": "alice@example.com", "client_id": "agent-7"}),
    );
    assert_eq!(c.human.as_deref(), Some("alice@example.com"));
    let c = read_with(
        HumanRule::Claim("email".into()),
        serde_json::json!({"sub": "x", "email": ""}),
    );
    assert_eq!(c.human, None, "an empty claim names nobody");
}

#[test]
fn a_workload_token_has_no_human() {
    let c = read(
        serde_json::json!({"sub": "agent-7", "client_id": "agent-7", "spiffe_id": "spiffe://t/agent"}),
    );
    assert_eq!(c.human, None);
    assert_eq!(c.agent.as_deref(), Some("spiffe://t/agent"));
    assert_eq!(c.workload.as_deref(), Some("spiffe://t/agent"));
}

#[test]
fn an_empty_workload_claim_binds_nothing() {
    let c = read(serde_json::json!({"sub": "a", "spiffe_id": ""}));
    assert_eq!(c.workload, None);
}

#[test]
fn scopes_split_on_ascii_spaces_only() {
    let c = read(
        serde_json::json!({"sub": "a", "scope": "tool:a:read\u{3000}tool:b:destructive  tool:c:read\ttool:d:read"}),
    );
    assert_eq!(
        c.scopes,
        vec![
            "tool:a:read\u{3000}tool:b:destructive",
            "tool:c:read\ttool:d:read"
        ]
    );
}

#[test]
fn confirmation_keys_are_read_from_cnf() {
    let c = read(
        serde_json::json!({"sub": "a", "cnf": {"x5t#S256": "abc", "jkt": "def"}, "task_id": 42}),
    );
    assert_eq!(c.x5t_s256.as_deref(), Some("abc"));
    assert_eq!(c.jkt.as_deref(), Some("def"));
    assert_eq!(c.task.as_deref(), Some("42"));
}

#[test]
fn an_actor_that_names_itself_by_no_identifier_is_refused() {
    for act in [
        serde_json::json!({}),
        serde_json::json!({"sub": ""}),
        serde_json::json!({"sub": 7}),
        serde_json::json!({"iss": "https://idp"}),
        serde_json::json!("planner"),
        serde_json::json!({"sub": "a", "act": {"sub": ""}}),
    ] {
        let token = serde_json::json!({"sub": "planner", "act": act});
        let err = AgentClaims::read(token.as_object().unwrap(), &issuer(HumanRule::Delegation));
        assert!(matches!(err, Err(TokenError::Malformed(_))), "{act}");
    }
}

#[test]
fn the_subject_is_no_human_when_any_actor_carries_its_name() {
    let c =
        read(serde_json::json!({"sub": "planner", "act": {"sub": "agent-7", "azp": "planner"}}));
    assert_eq!(c.human, None);
    let c = read(serde_json::json!({"sub": "planner", "act": {"azp": "planner"}}));
    assert_eq!((c.human, c.agent.as_deref()), (None, Some("planner")));
}

#[test]
fn a_grant_type_listed_among_others_still_marks_a_machine() {
    let token = serde_json::json!({"sub": "svc", "azp": "agent", "gty": ["refresh_token", "client-credentials"]});
    assert_eq!(read_with(HumanRule::Client, token).human, None);
}
