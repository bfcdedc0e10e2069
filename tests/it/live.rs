//! The live context through leash's own gRPC ports: tasks recorded from tokens, pauses,
//! revocations, risk signals and ended tasks holding from the next Check, the
//! `WatchEvents` stream, and durability across a restart and a `kill -9`.

use crate::common;

use std::time::Duration;

use common::envoy::Governed;
use common::keys::{bearer, claims, jwks, signing_key};
use common::{Leash, LeashProcess, PolicyDir, eventually, is_allowed, reason, request};
use jsonwebtoken::Algorithm;
use leash::edge::control::proto::{
    ApproveRequest, ClearRiskSignalRequest, CompleteTaskRequest, DenyRequest, GetTaskRequest,
    ListSessionsRequest, ListTasksRequest, PauseSessionRequest, ReportRiskSignalRequest,
    ResumeSessionRequest, RevokeSubjectRequest, RevokeTokenRequest, WatchEventsRequest,
};
use leash::token::mint::SigningKey;
use serde_json::json;

const ISS: &str = "https://idp.live";

/// Allows an authenticated request while the agent's risk stays under 50.
const POLICY: &str = "package envoy.authz
import rego.v1
default allow := false
allow if {
	input.leash.authenticated
	input.leash.context.risk.agent.max < 50
}
";

struct Issuer {
    key: SigningKey,
    yaml: String,
}

fn issuer() -> Issuer {
    let key = signing_key(Algorithm::EdDSA);
    let yaml = format!(
        "tokens:\n  mode: required\n  issuers:\n    - issuer: {ISS}\n      audiences: [tools]\n      algorithms: [EdDSA]\n      require_workload_binding: false\n      jwks: {}\n",
        jwks(&[(&key, "k1")])
    );
    Issuer { key, yaml }
}

impl Issuer {
    /// A token of agent `planner` for human `alice` on `task`, issued `age` seconds ago.
    fn token(&self, jti: &str, task: &str, age: i64) -> String {
        self.scoped(jti, task, age, "")
    }

    /// As [`token`](Self::token), carrying `scope` (the library reads it).
    fn scoped(&self, jti: &str, task: &str, age: i64, scope: &str) -> String {
        let now = leash::clock::unix_now();
        let claims = claims(json!({
            "iss": ISS, "aud": "tools", "sub": "alice", "act": {"sub": "planner"},
            "task_id": task, "jti": jti, "scope": scope,
            "iat": now - age, "exp": now - age + 600,
        }));
        self.key.sign(&claims, Some("k1"), None).unwrap()
    }
}

/// `leash serve` on its embedded library, trusting `issuer` (with `extra_yaml`), behind
/// a real Envoy on the shipped bootstrap.
async fn governed(issuer: &Issuer, extra_yaml: &str) -> Option<Governed> {
    common::envoy::governed(&format!("{}{extra_yaml}", issuer.yaml), &[]).await
}

fn call(token: &str, task: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    request(
        "GET",
        "/repos",
        &[("authorization", &bearer(token)), ("x-agent-task", task)],
    )
}

async fn start(issuer: &Issuer, policy: &PolicyDir, state: &str) -> Leash {
    let dir = policy.path_str();
    Leash::start_yaml(
        &issuer.yaml,
        &[
            ("tokens.mode", "required"),
            ("policy.dir", dir.as_str()),
            ("policy.watch_interval", "0s"),
            ("state.path", state),
        ],
    )
    .await
}

#[tokio::test]
async fn each_change_holds_from_the_next_check_and_lifts_as_it_should() {
    let issuer = issuer();
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let mut control = leash.control_client().await;
    let first = issuer.token("jti-1", "t-1", 10);
    let second = issuer.token("jti-2", "t-1", 10);

    let resp = leash.check(call(&first, "t-1")).await;
    assert!(is_allowed(&resp), "{:?}", reason(&resp));

    // The task is recorded from the token, with its human and agent.
    assert!(
        eventually(Duration::from_secs(5), async || {
            control
                .get_task(GetTaskRequest { task: "t-1".into() })
                .await
                .is_ok_and(|t| t.get_ref().agents == ["planner"])
        })
        .await
    );
    let task = control
        .get_task(GetTaskRequest { task: "t-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (task.status.as_str(), task.human.as_str()),
        ("active", "alice")
    );
    let sessions = control
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].agent.as_str(), sessions[0].task.as_str()),
        ("planner", "t-1")
    );

    // Pause and resume.
    control
        .pause_session(PauseSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
            reason: "looks off".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap();
    let resp = leash.check(call(&first, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("session.paused"));
    control
        .resume_session(ResumeSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
        })
        .await
        .unwrap();
    assert!(is_allowed(&leash.check(call(&first, "t-1")).await));

    // One token revoked; its sibling still passes.
    control
        .revoke_token(RevokeTokenRequest {
            issuer: ISS.into(),
            jti: "jti-1".into(),
            expires_at: 0,
            reason: "leaked".into(),
        })
        .await
        .unwrap();
    let resp = leash.check(call(&first, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("token.revoked"));
    assert!(is_allowed(&leash.check(call(&second, "t-1")).await));

    // A risk signal the policy reads, then cleared.
    control
        .report_risk_signal(ReportRiskSignalRequest {
            subject_kind: "agent".into(),
            subject_id: "planner".into(),
            kind: "anomalous_volume".into(),
            score: 80,
            source: "detector".into(),
            ttl_seconds: 600,
        })
        .await
        .unwrap();
    let resp = leash.check(call(&second, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("policy.denied"));
    control
        .clear_risk_signal(ClearRiskSignalRequest {
            subject_kind: "agent".into(),
            subject_id: "planner".into(),
            kind: "anomalous_volume".into(),
            source: "detector".into(),
        })
        .await
        .unwrap();
    assert!(is_allowed(&leash.check(call(&second, "t-1")).await));

    // The agent revoked as of 5 s ago: older tokens refused, a newer one passes.
    let now = leash::clock::unix_now();
    control
        .revoke_subject(RevokeSubjectRequest {
            kind: "agent".into(),
            id: "planner".into(),
            issuer: String::new(),
            revoked_after: now - 5,
            reason: "compromised".into(),
        })
        .await
        .unwrap();
    let resp = leash.check(call(&second, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("agent.revoked"));
    let fresh = issuer.token("jti-3", "t-1", 1);
    assert!(is_allowed(&leash.check(call(&fresh, "t-1")).await));

    // Completing the task cuts every token bound to it, the fresh one too.
    control
        .complete_task(CompleteTaskRequest {
            task: "t-1".into(),
            reason: "done".into(),
            revoke: false,
        })
        .await
        .unwrap();
    let resp = leash.check(call(&fresh, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("task.completed"));
    let completed = control
        .list_tasks(ListTasksRequest {
            status: "completed".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(completed.len(), 1);
    assert!(!completed[0].ended_by.is_empty());
    leash.stop().await;

    // Restarted on the same store: every change is still there.
    let leash = start(&issuer, &policy, &path).await;
    let resp = leash.check(call(&second, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("agent.revoked"));
    let other_task = issuer.token("jti-4", "t-2", 1);
    assert!(is_allowed(&leash.check(call(&other_task, "t-2")).await));
    let resp = leash.check(call(&fresh, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("task.completed"));

    // Listed a page at a time: the completed task, then the new one (recorded after
    // its first Check, not during it), then no more.
    let mut control = leash.control_client().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            control
                .list_tasks(ListTasksRequest::default())
                .await
                .is_ok_and(|r| r.get_ref().tasks.len() == 2)
        })
        .await
    );
    let mut listed = Vec::new();
    let mut page_token = String::new();
    for _ in 0..3 {
        let page = control
            .list_tasks(ListTasksRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tasks.len() <= 1);
        listed.extend(page.tasks.into_iter().map(|t| (t.id, t.status)));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert!(page_token.is_empty());
    assert_eq!(
        listed,
        [
            ("t-1".to_owned(), "completed".to_owned()),
            ("t-2".to_owned(), "active".to_owned())
        ]
    );
}

#[tokio::test]
async fn bad_changes_are_refused_and_change_nothing() {
    let issuer = issuer();
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let mut control = leash.control_client().await;
    let code = |r: Result<_, tonic::Status>| r.err().map(|s| s.code());

    let bad_score = control
        .report_risk_signal(ReportRiskSignalRequest {
            subject_kind: "agent".into(),
            subject_id: "planner".into(),
            kind: "x".into(),
            score: 101,
            source: "s".into(),
            ttl_seconds: 60,
        })
        .await;
    assert_eq!(code(bad_score), Some(tonic::Code::InvalidArgument));
    let no_ttl = control
        .report_risk_signal(ReportRiskSignalRequest {
            subject_kind: "agent".into(),
            subject_id: "planner".into(),
            kind: "x".into(),
            score: 10,
            source: "s".into(),
            ttl_seconds: 0,
        })
        .await;
    assert_eq!(code(no_ttl), Some(tonic::Code::InvalidArgument));
    let control_char = control
        .pause_session(PauseSessionRequest {
            agent: "plan\u{1f}ner".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(control_char), Some(tonic::Code::InvalidArgument));
    let unknown_kind = control
        .revoke_subject(RevokeSubjectRequest {
            kind: "robot".into(),
            id: "r".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(unknown_kind), Some(tonic::Code::InvalidArgument));
    let not_paused = control
        .resume_session(ResumeSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
        })
        .await;
    assert_eq!(code(not_paused), Some(tonic::Code::NotFound));

    // Without a token: refused, and the task is not ended.
    let mut anonymous = leash::edge::control::proto::control_client::ControlClient::new(
        common::channel(leash.control).await,
    );
    let refused = anonymous
        .complete_task(CompleteTaskRequest {
            task: "t-1".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(refused), Some(tonic::Code::Unauthenticated));
    let token = issuer.token("jti-1", "t-1", 1);
    assert!(is_allowed(&leash.check(call(&token, "t-1")).await));
}

/// Each live verb answers only the roles it names: a viewer changes nothing, an
/// operator decides no approval, an approver revokes and pauses nothing. Every refusal
/// leaves the agent's next Check as it was.
#[tokio::test]
async fn each_live_verb_refuses_a_caller_without_its_role_and_changes_nothing() {
    let issuer = issuer();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = |name: &str, token: &str| common::secret_file(secrets.path(), name, token);
    let (viewer, operator, approver) = ("v".repeat(43), "o".repeat(43), "a".repeat(43));
    let yaml = format!(
        "{}control:\n  tokens:\n    - {{ name: dashboard, file: {}, role: viewer }}\n    - {{ name: oncall, file: {}, role: operator }}\n    - {{ name: lead, file: {}, role: approver }}\n",
        issuer.yaml,
        token_file("viewer", &viewer),
        token_file("operator", &operator),
        token_file("approver", &approver),
    );
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let dir = policy.path_str();
    let leash = Leash::start_yaml(
        &yaml,
        &[
            ("tokens.mode", "required"),
            ("policy.dir", dir.as_str()),
            ("policy.watch_interval", "0s"),
        ],
    )
    .await;
    let mut control = leash::edge::control::proto::control_client::ControlClient::new(
        common::channel(leash.control).await,
    );
    fn as_<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Option<tonic::Code> {
        r.err().map(|s| s.code())
    }
    let agent = issuer.token("jti-1", "t-1", 10);
    assert!(is_allowed(&leash.check(call(&agent, "t-1")).await));
    // Recorded from the Check, as the viewer reads it.
    let mut reader = control.clone();
    assert!(
        eventually(Duration::from_secs(5), async || {
            reader
                .get_task(as_(&viewer, GetTaskRequest { task: "t-1".into() }))
                .await
                .is_ok()
        })
        .await
    );

    let denied = Some(tonic::Code::PermissionDenied);
    // Each call with `token`, refused for want of the role.
    macro_rules! refused {
        ($token:expr, $($verb:ident($request:expr)),+ $(,)?) => {
            $(assert_eq!(
                code(control.$verb(as_($token, $request)).await),
                denied,
                stringify!($verb)
            );)+
        };
    }
    for token in [&viewer, &approver] {
        refused!(
            token,
            complete_task(CompleteTaskRequest {
                task: "t-1".into(),
                ..Default::default()
            }),
            revoke_subject(RevokeSubjectRequest {
                kind: "agent".into(),
                id: "planner".into(),
                ..Default::default()
            }),
            revoke_token(RevokeTokenRequest {
                issuer: ISS.into(),
                jti: "jti-1".into(),
                ..Default::default()
            }),
            pause_session(PauseSessionRequest {
                agent: "planner".into(),
                task: "t-1".into(),
                ..Default::default()
            }),
            report_risk_signal(ReportRiskSignalRequest {
                subject_kind: "agent".into(),
                subject_id: "planner".into(),
                kind: "x".into(),
                score: 99,
                source: "s".into(),
                ttl_seconds: 60,
            }),
        );
    }
    // Deciding approvals is the approver's alone: an operator cannot, a viewer cannot.
    for token in [&viewer, &operator] {
        refused!(
            token,
            approve(ApproveRequest {
                id: "any".into(),
                ..Default::default()
            }),
            deny(DenyRequest {
                id: "any".into(),
                ..Default::default()
            }),
        );
    }
    // The approver reaches the verb: the approval is simply not there.
    let approve = control
        .approve(as_(
            &approver,
            ApproveRequest {
                id: "any".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(code(approve), Some(tonic::Code::NotFound));

    // Nothing changed: the next Check passes, the viewer reads an active task.
    assert!(is_allowed(&leash.check(call(&agent, "t-1")).await));
    let task = control
        .get_task(as_(&viewer, GetTaskRequest { task: "t-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.status, "active");
    // And the operator's word holds from the next Check.
    control
        .complete_task(as_(
            &operator,
            CompleteTaskRequest {
                task: "t-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        reason(&leash.check(call(&agent, "t-1")).await).as_deref(),
        Some("task.completed")
    );
}

/// A watcher that does not keep up is not waited for: Checks go on, and when it reads
/// again it is told how many decisions it missed, then gets the ones after.
#[tokio::test]
async fn a_slow_watcher_is_told_how_many_decisions_it_missed() {
    let policy = PolicyDir::new(&[(
        "authz.rego",
        "package envoy.authz\nimport rego.v1\nallow := true\n",
    )]);
    let dir = policy.path_str();
    let leash = Leash::start(&[
        ("policy.dir", dir.as_str()),
        ("policy.watch_interval", "0s"),
    ])
    .await;
    // A small stream window: the watcher's client buffers a few events, not thousands
    // (h2 refuses a peer whose unread small frames pile up past a budget).
    let slow = tonic::transport::Channel::from_shared(format!("http://{}", leash.control))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut subscribe = tonic::Request::new(WatchEventsRequest {
        decisions: true,
        ..Default::default()
    });
    subscribe.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", leash.control_token).parse().unwrap(),
    );
    let mut watch = leash::edge::control::proto::control_client::ControlClient::new(slow)
        .watch_events(subscribe)
        .await
        .unwrap()
        .into_inner();
    // More decisions than the watcher's buffer (4096), the stream's window and leash's
    // send buffer hold, while it reads nothing.
    let client = leash.client().await;
    let workers = (0..8).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            for _ in 0..1_500 {
                let resp = client.check(request("GET", "/", &[])).await.unwrap();
                assert!(is_allowed(resp.get_ref()));
            }
        })
    });
    for worker in workers {
        worker.await.unwrap();
    }
    let mut missed = 0;
    let mut after = 0;
    let next = async |watch: &mut tonic::Streaming<_>| {
        tokio::time::timeout(Duration::from_secs(2), watch.message())
            .await
            .ok()
            .and_then(Result::unwrap)
    };
    while let Some(event) = next(&mut watch).await {
        if event.missed_decisions > 0 {
            missed += event.missed_decisions;
        } else if missed > 0 && event.decision.is_some() {
            after += 1;
        }
    }
    assert!(missed > 0, "no gap was announced");
    assert!(after > 0, "nothing came after the gap");
}

#[tokio::test]
async fn watchers_see_every_change_in_order_and_can_replay_what_they_missed() {
    let issuer = issuer();
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let mut control = leash.control_client().await;
    let mut watch = control
        .watch_events(WatchEventsRequest {
            after_seq: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for agent in ["a", "b", "c"] {
        control
            .pause_session(PauseSessionRequest {
                agent: agent.into(),
                reason: "test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        seen.push((event.seq, event.table, event.key, event.op));
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    let keys: Vec<&str> = seen.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(keys, ["a/", "b/", "c/"]);
    assert!(seen.iter().all(|e| e.1 == "sessions" && e.3 == "put"));

    // A new watcher asks for what came after the first change.
    let mut replay = control
        .watch_events(WatchEventsRequest {
            after_seq: seqs[0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    for _ in 0..2 {
        replayed.push(replay.message().await.unwrap().unwrap().seq);
    }
    assert_eq!(replayed, seqs[1..]);
}

#[tokio::test]
async fn a_revoked_agent_does_not_act_through_a_delegate_and_unrevocable_ids_are_refused() {
    let issuer = issuer();
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let mut control = leash.control_client().await;
    let now = leash::clock::unix_now();
    let sign = |act: serde_json::Value, task: &str| {
        issuer
            .key
            .sign(
                &claims(json!({
                    "iss": ISS, "aud": "tools", "sub": "alice", "act": act,
                    "task_id": task, "jti": uuid::Uuid::new_v4().to_string(),
                    "iat": now - 10, "exp": now + 600,
                })),
                Some("k1"),
                None,
            )
            .unwrap()
    };
    let delegated = sign(json!({"sub": "helper", "act": {"sub": "planner"}}), "t-1");
    assert!(is_allowed(&leash.check(call(&delegated, "t-1")).await));
    control
        .revoke_subject(RevokeSubjectRequest {
            kind: "agent".into(),
            id: "planner".into(),
            reason: "compromised".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let resp = leash.check(call(&delegated, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("agent.revoked"));

    // A task id longer than the control API could name is refused outright.
    let long = "t".repeat(600);
    let unnameable = sign(json!({"sub": "other"}), &long);
    let resp = leash.check(call(&unnameable, &long)).await;
    assert_eq!(reason(&resp).as_deref(), Some("token.invalid"));

    // An issuer spelled otherwise than tokens spell it is refused, not stored.
    let typo = control
        .revoke_token(RevokeTokenRequest {
            issuer: format!("{ISS}/"),
            jti: "j".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(typo.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// A revocation acknowledged, then `kill -9`: after a restart it still holds, through
/// a real Envoy.
#[tokio::test]
async fn an_acknowledged_revocation_survives_kill_9() {
    use common::envoy::{Envoy, LeashAddr, Upstream, require_envoy};

    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    let issuer = issuer();
    let policy = PolicyDir::new(&[("authz.rego", POLICY)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.yaml");
    std::fs::write(&config, &issuer.yaml).unwrap();
    let store = format!("state.path={}", dir.path().join("state.redb").display());
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--policy",
        &policy.path_str(),
        "--set",
        "tokens.mode=required",
        "--set",
        "response.reason_header=x-leash-reason",
        "--set",
        &store,
    ];
    let token = issuer.token("jti-k", "t-k", 1);
    let auth = bearer(&token);
    let headers = [("authorization", auth.as_str()), ("x-agent-task", "t-k")];
    let upstream = Upstream::start().await;

    let mut first = LeashProcess::start(&args).await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Tcp(first.grpc), upstream.addr).await;
    assert_eq!(envoy.send("GET", "/repos", &headers, "").await.status, 200);
    let mut control = first.control_client().await;
    control
        .revoke_token(RevokeTokenRequest {
            issuer: ISS.into(),
            jti: "jti-k".into(),
            expires_at: 0,
            reason: "leaked".into(),
        })
        .await
        .unwrap();
    // Acknowledged: now the process dies without a chance to flush anything.
    first.kill().await;
    drop(envoy);

    let second = LeashProcess::start(&args).await;
    let envoy = Envoy::start(&envoy_bin, &LeashAddr::Tcp(second.grpc), upstream.addr).await;
    let refused = envoy.send("GET", "/repos", &headers, "").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("x-leash-reason"), Some("token.revoked"));
}

/// Through a real Envoy on the shipped bootstrap, leash on its embedded library: the
/// live context decides the next request the agent sends.
#[tokio::test]
async fn through_envoy_the_live_context_decides_the_next_request() {
    use leash::edge::control::proto::Event;

    let issuer = issuer();
    let Some(Governed { leash, envoy, .. }) = governed(&issuer, "").await else {
        return;
    };
    let mut control = leash.control_client().await;
    let mut watch = control
        .watch_events(WatchEventsRequest {
            after_seq: 0,
            decisions: true,
        })
        .await
        .unwrap()
        .into_inner();

    // The library needs a scope for the host and, for writes, a delegating human.
    let mint = |jti: &str, age: i64| issuer.scoped(jti, "t-1", age, "host:*:write");
    let old = mint("e-1", 30);
    let send = |method: &'static str, token: String| {
        let envoy = &envoy;
        async move {
            let auth = bearer(&token);
            let headers = [
                ("authorization", auth.as_str()),
                ("x-agent-task", "t-1"),
                ("content-type", "application/json"),
            ];
            let body = if method == "POST" {
                r#"{"name":"x"}"#
            } else {
                ""
            };
            let resp = envoy.send(method, "/items", &headers, body).await;
            (
                resp.status,
                resp.header("x-leash-reason").map(str::to_owned),
            )
        }
    };
    assert_eq!(send("GET", old.clone()).await, (200, None));
    assert_eq!(send("POST", old.clone()).await, (200, None));

    // A risk signal above the write limit (50) and under the read limit (80): writes
    // are refused, reads pass, and its expiry lifts it.
    control
        .report_risk_signal(ReportRiskSignalRequest {
            subject_kind: "agent".into(),
            subject_id: "planner".into(),
            kind: "anomalous_volume".into(),
            score: 60,
            source: "detector".into(),
            ttl_seconds: 2,
        })
        .await
        .unwrap();
    assert_eq!(send("GET", old.clone()).await, (200, None));
    assert_eq!(
        send("POST", old.clone()).await,
        (403, Some("policy.denied".to_owned()))
    );
    assert!(
        eventually(Duration::from_secs(10), async || send("POST", old.clone())
            .await
            .0
            == 200)
        .await,
        "the signal expired"
    );

    // Pause, then resume.
    control
        .pause_session(PauseSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
            reason: "review".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        send("GET", old.clone()).await,
        (403, Some("session.paused".to_owned()))
    );
    control
        .resume_session(ResumeSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(send("GET", old.clone()).await, (200, None));

    // The agent revoked 5 s ago: its older token is refused, a newer one passes.
    control
        .revoke_subject(RevokeSubjectRequest {
            kind: "agent".into(),
            id: "planner".into(),
            issuer: String::new(),
            revoked_after: leash::clock::unix_now() - 5,
            reason: "rotated".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        send("GET", old.clone()).await,
        (403, Some("agent.revoked".to_owned()))
    );
    let new = mint("e-2", 0);
    assert_eq!(send("GET", new.clone()).await, (200, None));

    // Completing the task cuts the agent off on its next request.
    control
        .complete_task(CompleteTaskRequest {
            task: "t-1".into(),
            reason: "done".into(),
            revoke: false,
        })
        .await
        .unwrap();
    assert_eq!(
        send("GET", new).await,
        (403, Some("task.completed".to_owned()))
    );

    // The operator's changes, in order, each once, with the decisions between them.
    let mut stream: Vec<Event> = Vec::new();
    while !stream.iter().any(|e| {
        e.decision
            .as_ref()
            .is_some_and(|d| d.reason == "task.completed")
    }) {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        assert_eq!(event.missed, 0);
        stream.push(event);
    }
    let mine: Vec<&Event> = stream
        .iter()
        .filter(|e| e.decision.is_none() && e.by != "leash")
        .collect();
    let tables: Vec<&str> = mine.iter().map(|e| e.table.as_str()).collect();
    assert_eq!(
        tables,
        ["risk", "sessions", "sessions", "subjects", "tasks"]
    );
    assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq));
    // Each refusal comes after the change that caused it, and names the agent and task.
    let at = |pred: &dyn Fn(&Event) -> bool| stream.iter().position(pred).unwrap();
    let paused = at(&|e| e.table == "sessions" && e.by != "leash");
    let refused = at(&|e| {
        e.decision
            .as_ref()
            .is_some_and(|d| d.reason == "session.paused")
    });
    assert!(paused < refused);
    let completed = at(&|e| e.table == "tasks" && e.by != "leash");
    let cut_off = stream.iter().rposition(|e| e.decision.is_some()).unwrap();
    assert!(completed < cut_off);
    let last = stream[cut_off].decision.as_ref().unwrap();
    assert_eq!(
        (last.agent.as_str(), last.task.as_str()),
        ("planner", "t-1")
    );
    assert!(!last.allowed);

    // A caller without the admin token changes nothing.
    let mut anonymous = leash::edge::control::proto::control_client::ControlClient::new(
        common::channel(leash.control).await,
    );
    let refused = anonymous
        .resume_session(ResumeSessionRequest {
            agent: "planner".into(),
            task: "t-1".into(),
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
}

/// The policy reads the session's counters and can ask for a pause.
#[tokio::test]
async fn the_policy_sees_the_sessions_counters_and_can_pause_it() {
    let issuer = issuer();
    let policy = PolicyDir::new(&[(
        "authz.rego",
        r#"package envoy.authz
import rego.v1
default allow := false
allow if {
	input.leash.authenticated
	input.parsed_path[0] == "repos"
	input.leash.context.counters.calls.read < 3
}
allow := {"allowed": false, "pause": {"reason": "asked to wipe everything"}} if {
	input.parsed_path[0] == "wipe"
}
"#,
    )]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let token = issuer.token("j-1", "t-1", 1);
    for _ in 0..3 {
        assert!(is_allowed(&leash.check(call(&token, "t-1")).await));
    }
    // The fourth read sees three before it.
    let resp = leash.check(call(&token, "t-1")).await;
    assert_eq!(reason(&resp).as_deref(), Some("policy.denied"));

    let other = issuer.token("j-2", "t-2", 1);
    let wipe = request(
        "DELETE",
        "/wipe",
        &[("authorization", &bearer(&other)), ("x-agent-task", "t-2")],
    );
    let resp = leash.check(wipe).await;
    assert_eq!(reason(&resp).as_deref(), Some("policy.denied"));
    // Held from the very next Check, while the pause is being recorded.
    assert_eq!(
        reason(&leash.check(call(&other, "t-2")).await).as_deref(),
        Some("session.paused"),
        "the policy's pause holds from the next Check"
    );
    let mut control = leash.control_client().await;
    let mut sessions = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            sessions = control
                .list_sessions(ListSessionsRequest {
                    agent: "planner".into(),
                    task: "t-2".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .sessions;
            sessions.first().is_some_and(|s| !s.paused_by.is_empty())
        })
        .await,
        "the pause is recorded"
    );
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].paused_by, "leash");
    assert!(
        sessions[0]
            .pause_reason
            .contains("asked to wipe everything")
    );
}

/// Through a real Envoy: the configured number of denials pauses the session, and the
/// pause is announced naming the rule.
#[tokio::test]
async fn through_envoy_denials_pause_the_session_automatically() {
    let issuer = issuer();
    let rules = "behaviour:\n  rules:\n    - { name: denial-burst, when: denials, at_least: 3, within: 1m }\n";
    let Some(Governed { leash, envoy, .. }) = governed(&issuer, rules).await else {
        return;
    };
    let mut watch = leash
        .control_client()
        .await
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A token that may read hosts, not write them.
    let token = issuer.scoped("a-1", "t-1", 1, "host:*:read");
    let auth = bearer(&token);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-agent-task", "t-1"),
        ("content-type", "application/json"),
    ];
    assert_eq!(envoy.send("GET", "/items", &headers, "").await.status, 200);
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let denied = envoy.send("POST", "/items", &headers, "{}").await;
        reasons.push(denied.header("x-leash-reason").map(str::to_owned));
    }
    // The third denial trips the rule: that very Check is the first the pause holds.
    assert_eq!(
        reasons,
        [
            Some("policy.denied".to_owned()),
            Some("policy.denied".to_owned()),
            Some("session.paused".to_owned())
        ]
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            envoy
                .send("GET", "/items", &headers, "")
                .await
                .header("x-leash-reason")
                == Some("session.paused")
        })
        .await,
        "three denials paused the session"
    );
    let logged = leash
        .wait_log(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("session paused automatically"))
        })
        .await
        .expect("the pause is logged");
    assert!(logged.to_string().contains("denial-burst"), "{logged}");
    // And announced to watchers: the session's pause, by leash, naming the rule.
    let announced = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = watch.message().await.unwrap() {
            if event.table == "sessions" && event.record_json.contains("pause\":{") {
                return event;
            }
        }
        panic!("the stream ended before the pause");
    })
    .await
    .expect("the pause is announced");
    assert_eq!(announced.by, "leash");
    assert!(
        announced.record_json.contains("denial-burst"),
        "{}",
        announced.record_json
    );
}

/// Through a real Envoy on the embedded library: a destructive tool call waits for a
/// human's approval of exactly that call (tool and arguments), which then allows it
/// once.
#[tokio::test]
async fn through_envoy_an_approval_allows_exactly_one_matching_call() {
    use leash::edge::control::proto::{ApproveRequest, ListApprovalsRequest};

    let issuer = issuer();
    let tools = "actions:\n  tools: { delete_repo: { class: destructive } }\n";
    let Some(Governed {
        leash,
        envoy,
        upstream,
        ..
    }) = governed(&issuer, tools).await
    else {
        return;
    };
    let mut control = leash.control_client().await;
    let token = issuer.scoped("p-1", "t-1", 1, "tool:delete_repo:destructive");
    let auth = bearer(&token);
    let delete = |repo: &'static str| {
        let envoy = &envoy;
        let auth = auth.clone();
        async move {
            let body = json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "delete_repo", "arguments": {"repo": repo}},
            })
            .to_string();
            let headers = [
                ("authorization", auth.as_str()),
                ("x-agent-task", "t-1"),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ];
            envoy.send("POST", "/mcp", &headers, &body).await
        }
    };

    let first = delete("a").await;
    assert_eq!(first.status, 403, "{first:?}");
    assert_eq!(first.header("x-leash-reason"), Some("approval.required"));
    assert!(first.header("retry-after").is_some());
    let asked: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(asked["error"], "approval_required");
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let status_url = asked["approval"]["status_url"].as_str().unwrap().to_owned();
    assert!(
        status_url.ends_with(&format!("/v1/approvals/{id}")),
        "{status_url}"
    );

    // Asked again before anyone decides, even before the first request is recorded:
    // the same pending approval.
    let id_of = |resp: common::envoy::Response| {
        let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap_or_default();
        body["approval"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(id_of(delete("a").await), id);
    // Two calls at once for another action name one approval too.
    let (one, two) = tokio::join!(delete("c"), delete("c"));
    let (one, two) = (id_of(one), id_of(two));
    assert!(!one.is_empty() && one != id);
    assert_eq!(one, two);
    assert!(
        eventually(Duration::from_secs(5), async || {
            control
                .list_approvals(ListApprovalsRequest {
                    status: "pending".into(),
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| r.get_ref().approvals.len() == 2)
        })
        .await
    );
    control
        .deny(leash::edge::control::proto::DenyRequest {
            id: one.clone(),
            reason: "not that one".into(),
        })
        .await
        .unwrap();
    let pending = control
        .list_approvals(ListApprovalsRequest {
            status: "pending".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].action.starts_with("tool delete_repo at http"),
        "{}",
        pending[0].action
    );
    assert_eq!(
        (pending[0].agent.as_str(), pending[0].task.as_str()),
        ("planner", "t-1")
    );

    // The agent follows it on the admin port with its own token; others learn nothing.
    let poll = |auth: Option<String>| {
        let path = format!("/v1/approvals/{id}");
        let admin = leash.admin;
        async move {
            let client = reqwest::Client::new();
            let mut req = client.get(format!("http://{admin}{path}"));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (code, body) = poll(Some(auth.clone())).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"pending""#), "{body}");
    assert_eq!(poll(None).await.0, 401);

    control
        .approve(ApproveRequest {
            id: id.clone(),
            uses: 1,
            approved_until: 0,
            reason: "ok, just this repo".into(),
        })
        .await
        .unwrap();
    // Other arguments are another action: still refused, with an approval of their own.
    let other = delete("b").await;
    assert_eq!(other.header("x-leash-reason"), Some("approval.required"));
    let other: serde_json::Value = serde_json::from_str(&other.body).unwrap();
    assert_ne!(other["approval"]["id"], id.as_str());
    // The approved call passes once, reaching the tool; the next one is refused.
    let hits = upstream.hits();
    assert_eq!(delete("a").await.status, 200);
    assert_eq!(upstream.hits(), hits + 1);
    let again = delete("a").await;
    assert_eq!(again.header("x-leash-reason"), Some("approval.required"));
    let (_, body) = poll(Some(auth.clone())).await;
    assert!(body.contains(r#""status":"used""#), "{body}");
}

/// An approval for N uses allows exactly N matching calls, and none after its
/// `approved_until`; a denied one stays refused for the time an approver had to decide.
#[tokio::test]
async fn an_approval_allows_its_uses_until_its_deadline_and_a_denial_stands() {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use leash::edge::control::proto::{ApproveRequest, DenyRequest};

    let issuer = issuer();
    let yaml = format!(
        "{}actions:\n  tools: {{ delete_repo: {{ class: destructive }} }}\n",
        issuer.yaml
    );
    let leash = Leash::start_yaml(&yaml, &[("tokens.mode", "required")]).await;
    let mut control = leash.control_client().await;
    let token = issuer.scoped("p-1", "t-1", 1, "tool:delete_repo:destructive");
    let auth = bearer(&token);
    let delete = async |repo: &str| {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "delete_repo", "arguments": {"repo": repo}},
        })
        .to_string();
        let headers = [
            ("authorization", auth.as_str()),
            ("x-agent-task", "t-1"),
            ("content-type", "application/json"),
        ];
        leash
            .check(common::request_with_body("POST", "/mcp", &headers, &body))
            .await
    };
    // The approval a refusal names, once the updater has recorded it.
    let asked = async |repo: &str| {
        let resp = delete(repo).await;
        assert_eq!(reason(&resp).as_deref(), Some("approval.required"));
        let Some(HttpResponse::DeniedResponse(denied)) = &resp.http_response else {
            panic!("no denial body: {resp:?}");
        };
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        let id = body["approval"]["id"].as_str().unwrap().to_owned();
        let mut reader = leash.control_client().await;
        assert!(
            eventually(Duration::from_secs(5), async || {
                reader
                    .list_approvals(leash::edge::control::proto::ListApprovalsRequest {
                        status: "pending".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|r| r.get_ref().approvals.iter().any(|a| a.id == id))
            })
            .await,
            "approval {id} is recorded"
        );
        id
    };

    // Three uses: three calls pass, the fourth asks again.
    let id = asked("a").await;
    control
        .approve(ApproveRequest {
            id,
            uses: 3,
            approved_until: 0,
            reason: "three deletions".into(),
        })
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(is_allowed(&delete("a").await));
    }
    assert_eq!(
        reason(&delete("a").await).as_deref(),
        Some("approval.required")
    );

    // Approved until two seconds from now: used before, refused after.
    let id = asked("b").await;
    let until = leash::clock::unix_now() + 2;
    control
        .approve(ApproveRequest {
            id,
            uses: 10,
            approved_until: until,
            reason: "briefly".into(),
        })
        .await
        .unwrap();
    assert!(is_allowed(&delete("b").await));
    while leash::clock::unix_now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        reason(&delete("b").await).as_deref(),
        Some("approval.required")
    );

    // Denied: asking again at once is refused without a new approval.
    let id = asked("c").await;
    control
        .deny(DenyRequest {
            id: id.clone(),
            reason: "no".into(),
        })
        .await
        .unwrap();
    let again = delete("c").await;
    assert_eq!(reason(&again).as_deref(), Some("approval.required"));
    let Some(HttpResponse::DeniedResponse(denied)) = &again.http_response else {
        panic!("no denial body: {again:?}");
    };
    assert!(!denied.body.contains("status_url"), "{}", denied.body);
}

/// A policy's pause reason may be longer than the state keeps: the pause still holds,
/// its reason cut short.
#[tokio::test]
async fn a_long_pause_reason_still_pauses() {
    let issuer = issuer();
    // regorus takes lines of up to 1024 columns: the reason is built of parts.
    let part = "x".repeat(900);
    let policy = PolicyDir::new(&[(
        "authz.rego",
        &format!(
            "package envoy.authz\nimport rego.v1\npart := \"{part}\"\nallow := {{\"allowed\": false, \"pause\": {{\"reason\": concat(\"\", [part, part, part])}}}}\n"
        ),
    )]);
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.redb").display().to_string();
    let leash = start(&issuer, &policy, &path).await;
    let token = issuer.token("j-1", "t-1", 1);
    assert!(
        eventually(Duration::from_secs(5), async || {
            reason(&leash.check(call(&token, "t-1")).await).as_deref() == Some("session.paused")
        })
        .await
    );
}
