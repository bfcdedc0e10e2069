//! What a verified token says about who acts: the delegating human, the agent, the
//! chain of actors (RFC 8693 `act`), scopes, the task and the confirmation keys.

use serde_json::{Map, Value};

/// The claims leash reads, taken from a verified token once and cached with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentClaims {
    pub subject: Option<String>,
    /// On whose behalf the request is made, when a human delegated.
    pub human: Option<String>,
    /// The party acting now: the outermost `act`, else the client, else the subject.
    pub agent: Option<String>,
    /// Every actor, outermost (current) first.
    pub chain: Vec<String>,
    pub scopes: Vec<String>,
    pub task: Option<String>,
    /// `cnf.x5t#S256`: the certificate the token is bound to (RFC 8705).
    pub x5t_s256: Option<String>,
    /// `cnf.jkt`: the DPoP key the token is bound to (RFC 9449).
    pub jkt: Option<String>,
    /// The workload identity claim, when the issuer names one.
    pub workload: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
}

impl AgentClaims {
    pub fn read(
        claims: &Map<String, Value>,
        task_claim: &str,
        workload_claim: Option<&str>,
    ) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let time = |name: &str| claims.get(name).and_then(Value::as_i64);
        let subject = text("sub");
        let chain = actors(claims.get("act"));
        let client = text("client_id").or_else(|| text("azp"));
        let acting_client = client.filter(|c| Some(c) != subject.as_ref());
        let (agent, human) = match (chain.first(), acting_client) {
            (Some(actor), _) => (Some(actor.clone()), subject.clone()),
            (None, Some(client)) => (Some(client), subject.clone()),
            // A token a workload got for itself (client credentials): no human delegated.
            (None, None) => (
                workload_claim.and_then(&text).or_else(|| subject.clone()),
                None,
            ),
        };
        let cnf = claims.get("cnf").and_then(Value::as_object);
        let cnf_text = |name: &str| {
            cnf.and_then(|c| c.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            human,
            agent,
            chain,
            scopes: scopes(claims),
            task: claims.get(task_claim).and_then(scalar_text),
            x5t_s256: cnf_text("x5t#S256"),
            jkt: cnf_text("jkt"),
            workload: workload_claim.and_then(text),
            exp: time("exp"),
            iat: time("iat"),
            nbf: time("nbf"),
            subject,
        }
    }

    pub fn depth(&self) -> usize {
        self.chain.len()
    }
}

/// `act` nests prior actors inside the current one: `{"sub": "b", "act": {"sub": "a"}}`
/// means b acts now, for a who acted before.
fn actors(mut act: Option<&Value>) -> Vec<String> {
    let mut chain = Vec::new();
    // Bounded: a token nesting deeper than this is not describing a real chain.
    for _ in 0..32 {
        let Some(obj) = act.and_then(Value::as_object) else {
            break;
        };
        let id = ["sub", "client_id", "iss"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str));
        chain.push(id.unwrap_or("unknown").to_owned());
        act = obj.get("act");
    }
    chain
}

/// `scope` (space separated) or `scp` (array, or a string).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let split = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => split(s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: Value) -> AgentClaims {
        AgentClaims::read(json.as_object().unwrap(), "task_id", Some("spiffe_id"))
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
    fn a_client_acting_for_a_user_is_the_agent() {
        let c =
            read(serde_json::json!({"sub": "alice", "client_id": "agent-7", "scp": ["a", "b"]}));
        assert_eq!(
            (c.human.as_deref(), c.agent.as_deref()),
            (Some("alice"), Some("agent-7"))
        );
        assert_eq!(c.scopes, vec!["a", "b"]);
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
    fn confirmation_keys_are_read_from_cnf() {
        let c = read(
            serde_json::json!({"sub": "a", "cnf": {"x5t#S256": "abc", "jkt": "def"}, "task_id": 42}),
        );
        assert_eq!(c.x5t_s256.as_deref(), Some("abc"));
        assert_eq!(c.jkt.as_deref(), Some("def"));
        assert_eq!(c.task.as_deref(), Some("42"));
    }
}
