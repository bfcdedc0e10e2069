//! Token verification and binding with real keys: every hard-denial reason, the
//! delegation chain, DPoP, transaction tokens and the verified-token cache.

use crate::common;

use std::sync::Arc;

use common::keys::{
    bearer, claims, client_certificate, jwks, sign_edited, signing_key, url_encode,
};
use jsonwebtoken::Algorithm;
use leash::config::Config;
use leash::request::Target;
use leash::token::mint::{SigningKey, act_chain, certificate_thumbprint};
use leash::token::{AuthFailure, Authenticator, Identity, Presentation};
use leash::view::RequestView;
use serde_json::{Map, Value, json};

const ISS: &str = "https://idp.test";
const AUD: &str = "tools.test";
const SPIFFE: &str = "spiffe://test/ns/agents/sa/planner";

struct Fixture {
    auth: Authenticator,
    rsa: SigningKey,
    ed: SigningKey,
    txn: SigningKey,
    now: i64,
}

fn fixture() -> Fixture {
    fixture_with("")
}

/// An authenticator trusting an access-token issuer (RS256 and EdDSA keys) and a
/// transaction-token issuer; `extra` is appended to the issuer's YAML.
fn fixture_with(extra: &str) -> Fixture {
    fixture_with_tokens("", extra)
}

/// As [`fixture_with`], with `tokens` (keys of the `tokens:` section) too.
fn fixture_with_tokens(tokens: &str, extra: &str) -> Fixture {
    let rsa = signing_key(Algorithm::RS256);
    let ed = signing_key(Algorithm::EdDSA);
    let txn = signing_key(Algorithm::ES256);
    let yaml = format!(
        r#"
tokens:
{tokens}
  issuers:
    - issuer: {ISS}
      audiences: [{AUD}]
      algorithms: [RS256, EdDSA]
      jwks: {access}
      workload_claim: spiffe_id
      max_lifetime: 15m
      leeway: 5s
{extra}
    - issuer: https://txn.test
      kind: transaction
      audiences: [trust.test]
      algorithms: [ES256]
      jwks: {txn_jwks}
      workload_claim: req_wl
"#,
        access = jwks(&[(&rsa, "rsa-1"), (&ed, "ed-1")]),
        txn_jwks = jwks(&[(&txn, "txn-1")]),
    );
    let config = Config::from_yaml("test", &yaml, &[]).unwrap();
    Fixture {
        auth: Authenticator::new(config.tokens.settings).unwrap(),
        rsa,
        ed,
        txn,
        now: leash::clock::unix_now(),
    }
}

impl Fixture {
    fn claims(&self) -> Map<String, Value> {
        claims(json!({
            "iss": ISS, "aud": AUD, "sub": "alice",
            "iat": self.now, "exp": self.now + 300,
            "task_id": "task-7", "spiffe_id": SPIFFE,
            "scope": "tool:search:read",
        }))
    }

    fn token(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        sign_edited(&self.rsa, "rsa-1", self.claims(), edit)
    }

    fn check(&self, headers: &[(&str, &str)]) -> Result<Identity, String> {
        self.check_view(view(headers))
    }

    fn check_view(&self, view: RequestView) -> Result<Identity, String> {
        match authenticate(&self.auth, &view, self.now) {
            Ok(identity) => Ok(identity),
            Err(AuthFailure::Denied(err)) => Err(err.reason().code().to_owned()),
            Err(AuthFailure::NeedKeys(_)) => Err("need keys".into()),
        }
    }
}

/// Authenticates `view` at `now`, its target read with the default options.
fn authenticate(
    auth: &Authenticator,
    view: &RequestView,
    now: i64,
) -> Result<Identity, AuthFailure> {
    let target = Target::of(view, &Default::default()).unwrap();
    auth.authenticate(view, &target, now)
}

fn view(headers: &[(&str, &str)]) -> RequestView {
    let req = leash::edge::ingress::sample_request("POST", "/mcp?x=1", headers, "");
    let mut view = RequestView::try_from(req).unwrap();
    view.source_principal = SPIFFE.into();
    view
}

#[test]
fn a_valid_bound_token_for_the_task_passes() {
    let f = fixture();
    let token = f.token(|_| {});
    let id = f
        .check(&[
            ("authorization", &bearer(&token)),
            ("x-agent-task", "task-7"),
        ])
        .unwrap();
    assert_eq!(id.presented, Presentation::Bearer);
    assert!(id.binding.workload_claim);
    assert_eq!(id.binding.task.as_deref(), Some("task-7"));
    assert_eq!(id.token.claims.scopes, vec!["tool:search:read"]);
}

#[test]
fn each_hard_denial_has_its_reason() {
    let f = fixture();
    let ok_headers = |token: &str| {
        vec![
            ("authorization".to_owned(), bearer(token)),
            ("x-agent-task".to_owned(), "task-7".to_owned()),
        ]
    };
    let run = |headers: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        f.check(&refs).err()
    };
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };

    // alg none: an unsigned token.
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&Value::Object(f.claims()))
    );
    assert_eq!(
        run(ok_headers(&unsigned)).as_deref(),
        Some("token.alg_not_allowed")
    );

    // HS256 signed with the issuer's RSA public key as the secret (key confusion).
    let public_key = f.rsa.public_jwk(Some("rsa-1")).unwrap().to_string();
    let confused = SigningKey::from_pem(Algorithm::HS256, public_key.as_bytes()).unwrap();
    let forged = confused.sign(&f.claims(), Some("rsa-1"), None).unwrap();
    assert_eq!(
        run(ok_headers(&forged)).as_deref(),
        Some("token.alg_not_allowed")
    );

    type Edit<'a> = Box<dyn Fn(&mut Map<String, Value>) + 'a>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "token.expired",
            Box::new(|c| {
                c.insert("iat".into(), json!(f.now - 600));
                c.insert("exp".into(), json!(f.now - 60));
            }),
        ),
        (
            "token.not_yet_valid",
            Box::new(|c| {
                c.insert("nbf".into(), json!(f.now + 120));
            }),
        ),
        (
            "token.wrong_audience",
            Box::new(|c| {
                c.insert("aud".into(), json!(["other.test"]));
            }),
        ),
        (
            "token.lifetime_exceeded",
            Box::new(|c| {
                c.insert("exp".into(), json!(f.now + 3600));
            }),
        ),
        (
            "token.lifetime_exceeded",
            Box::new(|c| {
                c.remove("iat");
                c.insert("exp".into(), json!(f.now + 3600));
            }),
        ),
        (
            "token.invalid",
            Box::new(|c| {
                c.remove("exp");
            }),
        ),
        (
            "token.unknown_issuer",
            Box::new(|c| {
                c.insert("iss".into(), json!("https://evil.test"));
            }),
        ),
        (
            "binding.task_mismatch",
            Box::new(|c| {
                c.insert("task_id".into(), json!("task-8"));
            }),
        ),
        (
            "binding.task_missing",
            Box::new(|c| {
                c.remove("task_id");
            }),
        ),
        (
            "binding.workload_mismatch",
            Box::new(|c| {
                c.insert("spiffe_id".into(), json!("spiffe://test/other"));
            }),
        ),
        (
            "binding.unbound",
            Box::new(|c| {
                c.remove("spiffe_id");
            }),
        ),
    ];
    for (reason, edit) in cases {
        let token = f.token(|c| edit(c));
        assert_eq!(run(ok_headers(&token)).as_deref(), Some(reason));
    }

    // A tampered payload no longer matches its signature.
    let token = f.token(|_| {});
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = f.claims();
    claims.insert("sub".into(), json!("mallory"));
    parts[1] = b64(&Value::Object(claims));
    assert_eq!(
        run(ok_headers(&parts.join("."))).as_deref(),
        Some("token.invalid")
    );

    // A key the issuer does not publish (inline keys cannot be fetched again).
    let stranger = signing_key(Algorithm::RS256);
    let unknown = stranger.sign(&f.claims(), Some("rsa-2"), None).unwrap();
    assert_eq!(
        run(ok_headers(&unknown)).as_deref(),
        Some("token.unknown_key")
    );
    // A known kid with a foreign signature.
    let impostor = stranger.sign(&f.claims(), Some("rsa-1"), None).unwrap();
    assert_eq!(run(ok_headers(&impostor)).as_deref(), Some("token.invalid"));

    // The request side.
    assert_eq!(
        f.check(&[("x-agent-task", "task-7")]).err().as_deref(),
        Some("token.missing")
    );
    assert_eq!(
        f.check(&[("authorization", "Basic YTpi")]).err().as_deref(),
        Some("token.invalid")
    );
    let token = f.token(|_| {});
    assert_eq!(
        f.check(&[("authorization", &bearer(&token))])
            .err()
            .as_deref(),
        Some("binding.task_mismatch")
    );
}

#[test]
fn hs256_needs_its_own_secret_and_never_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, "a-shared-secret-of-at-least-32-bytes!").unwrap();
    let f = fixture_with(&format!(
        "      hmac_secret_file: {}\n",
        secret_path.display()
    ));
    // The fixture's issuer lists RS256 and EdDSA only: HS256 stays refused.
    let hs =
        SigningKey::from_pem(Algorithm::HS256, b"a-shared-secret-of-at-least-32-bytes!").unwrap();
    let token = hs.sign(&f.claims(), None, None).unwrap();
    let err = f
        .check(&[
            ("authorization", &bearer(&token)),
            ("x-agent-task", "task-7"),
        ])
        .err();
    assert_eq!(err.as_deref(), Some("token.alg_not_allowed"));

    let config = Config::from_yaml(
        "test",
        &format!(
            "tokens:\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      algorithms: [HS256]\n      hmac_secret_file: {}\n      require_workload_binding: false\n",
            secret_path.display()
        ),
        &[],
    )
    .unwrap();
    let auth = Authenticator::new(config.tokens.settings).unwrap();
    let v = view(&[
        ("authorization", &bearer(&token)),
        ("x-agent-task", "task-7"),
    ]);
    assert!(
        authenticate(&auth, &v, f.now).is_ok(),
        "the configured secret verifies"
    );
    let confused = SigningKey::from_pem(
        Algorithm::HS256,
        f.rsa.public_jwk(None).unwrap().to_string().as_bytes(),
    )
    .unwrap();
    let forged = confused.sign(&f.claims(), None, None).unwrap();
    let v = view(&[
        ("authorization", &bearer(&forged)),
        ("x-agent-task", "task-7"),
    ]);
    match authenticate(&auth, &v, f.now) {
        Err(AuthFailure::Denied(err)) => assert_eq!(err.reason().code(), "token.invalid"),
        other => panic!("{other:?}"),
    }

    let missing = Config::from_yaml(
        "test",
        &format!(
            "tokens:\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      algorithms: [HS256]\n"
        ),
        &[],
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("hmac_secret_file")
    );
    let none = Config::from_yaml(
        "test",
        &format!(
            "tokens:\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      algorithms: [none]\n"
        ),
        &[],
    );
    assert!(none.unwrap_err().to_string().contains("never accepted"));
}

#[test]
fn a_nested_act_chain_names_human_agent_and_every_actor() {
    let f = fixture();
    let token = f.token(|c| {
        c.insert(
            "act".into(),
            act_chain(&["planner".into(), "orchestrator".into(), "ui".into()]).unwrap(),
        );
    });
    let id = f
        .check(&[
            ("authorization", &bearer(&token)),
            ("x-agent-task", "task-7"),
        ])
        .unwrap();
    let claims = &id.token.claims;
    assert_eq!(claims.human.as_deref(), Some("alice"));
    assert_eq!(claims.agent.as_deref(), Some("planner"));
    assert_eq!(claims.chain, vec!["planner", "orchestrator", "ui"]);
}

#[test]
fn certificate_bound_tokens_need_that_certificate() {
    let f = fixture();
    let (cert, _) = client_certificate(SPIFFE);
    let (other, _) = client_certificate(SPIFFE);
    let token = f.token(|c| {
        c.remove("spiffe_id");
        c.insert(
            "cnf".into(),
            json!({"x5t#S256": certificate_thumbprint(&cert).unwrap()}),
        );
    });
    let headers = [
        ("authorization", bearer(&token)),
        ("x-agent-task", "task-7".into()),
    ];
    let with_cert = |pem: &str| {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut v = view(&refs);
        v.source_certificate = url_encode(pem);
        f.check_view(v)
    };
    assert!(with_cert(&cert).unwrap().binding.certificate);
    assert_eq!(
        with_cert(&other).err().as_deref(),
        Some("binding.workload_mismatch")
    );
    assert_eq!(
        with_cert("").err().as_deref(),
        Some("binding.workload_mismatch")
    );
}

#[test]
fn dpop_proofs_bind_each_request_and_cannot_be_replayed() {
    let f = fixture();
    let holder = signing_key(Algorithm::ES256);
    let token = f.token(|c| {
        c.remove("spiffe_id");
        c.insert("cnf".into(), json!({"jkt": holder.thumbprint().unwrap()}));
    });
    let uri = "http://tools.example/mcp";
    let proof = |method: &str, uri: &str, jti: &str, key: &SigningKey| {
        key.dpop_proof(method, uri, &token, f.now, jti).unwrap()
    };
    let send = |proof: String, scheme: &str| {
        f.check(&[
            ("authorization", &format!("{scheme} {token}")),
            ("dpop", &proof),
            ("x-agent-task", "task-7"),
        ])
    };
    let id = send(proof("POST", uri, "j1", &holder), "DPoP").unwrap();
    assert!(id.binding.dpop);
    assert_eq!(id.presented, Presentation::Dpop);
    assert_eq!(
        send(proof("POST", uri, "j1", &holder), "DPoP")
            .err()
            .as_deref(),
        Some("dpop.replay")
    );
    assert_eq!(
        send(proof("GET", uri, "j2", &holder), "DPoP")
            .err()
            .as_deref(),
        Some("dpop.invalid")
    );
    assert_eq!(
        send(
            proof("POST", "http://tools.example/other", "j3", &holder),
            "DPoP"
        )
        .err()
        .as_deref(),
        Some("dpop.invalid")
    );
    let thief = signing_key(Algorithm::ES256);
    assert_eq!(
        send(proof("POST", uri, "j4", &thief), "DPoP")
            .err()
            .as_deref(),
        Some("dpop.invalid")
    );
    // A DPoP-bound token presented as a bearer token is refused.
    assert_eq!(
        send(proof("POST", uri, "j5", &holder), "Bearer")
            .err()
            .as_deref(),
        Some("dpop.invalid")
    );
    // The query is not part of htu.
    assert!(
        send(
            proof("POST", "http://TOOLS.example/mcp", "j6", &holder),
            "DPoP"
        )
        .is_ok()
    );
}

#[test]
fn proofs_from_other_keys_cannot_push_a_proof_out_of_the_replay_cache() {
    // One entry per shard: a cache that evicted would forget a proof at once.
    let f = fixture_with_tokens("  dpop: { replay_entries: 16 }", "");
    let holder = signing_key(Algorithm::ES256);
    let token = f.token(|c| {
        c.remove("spiffe_id");
        c.insert("cnf".into(), json!({"jkt": holder.thumbprint().unwrap()}));
    });
    let uri = "http://tools.example/mcp";
    let send = |key: &SigningKey, jti: &str| {
        let proof = key.dpop_proof("POST", uri, &token, f.now, jti).unwrap();
        f.check(&[
            ("authorization", &format!("DPoP {token}")),
            ("dpop", &proof),
            ("x-agent-task", "task-7"),
        ])
        .err()
    };
    assert_eq!(send(&holder, "victim"), None);
    // A flood of proofs signed by other keys is refused before the cache...
    let attacker = signing_key(Algorithm::ES256);
    for i in 0..200 {
        assert_eq!(
            send(&attacker, &format!("flood-{i}")).as_deref(),
            Some("dpop.invalid")
        );
    }
    // ...so the victim's proof is still remembered and cannot be replayed.
    assert_eq!(send(&holder, "victim").as_deref(), Some("dpop.replay"));
    // The holder's own proofs fill the cache: it refuses rather than forgets.
    let refused = (0..64)
        .filter_map(|i| send(&holder, &format!("own-{i}")))
        .collect::<Vec<_>>();
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|r| r == "dpop.replay_cache_full"),
        "{refused:?}"
    );
    assert_eq!(send(&holder, "victim").as_deref(), Some("dpop.replay"));
}

#[test]
fn a_transaction_token_beside_an_access_token_is_bound_on_its_own_terms() {
    let f = fixture();
    let access = f.token(|_| {});
    let txn = |req_wl: &str| {
        let claims = claims(json!({
            "iss": "https://txn.test", "aud": "trust.test", "sub": "alice",
            "iat": f.now, "exp": f.now + 60, "txn": "task-7", "req_wl": req_wl,
        }));
        f.txn
            .sign(&claims, Some("txn-1"), Some("txntoken+jwt"))
            .unwrap()
    };
    let send = |txn: String| {
        f.check(&[
            ("authorization", &bearer(&access)),
            ("txn-token", &txn),
            ("x-agent-task", "task-7"),
        ])
        .err()
    };
    assert_eq!(send(txn(SPIFFE)), None);
    assert_eq!(
        send(txn("spiffe://test/ns/agents/sa/other")).as_deref(),
        Some("binding.workload_mismatch")
    );
    assert_eq!(send(txn("")).as_deref(), Some("binding.unbound"));
    // Another principal's transaction token cannot lend its task to this token.
    let bob = f
        .txn
        .sign(
            &claims(json!({
                "iss": "https://txn.test", "aud": "trust.test", "sub": "bob",
                "iat": f.now, "exp": f.now + 60, "txn": "task-7", "req_wl": SPIFFE,
            })),
            Some("txn-1"),
            Some("txntoken+jwt"),
        )
        .unwrap();
    assert_eq!(send(bob).as_deref(), Some("binding.subject_mismatch"));
}

#[test]
fn transaction_tokens_travel_in_their_own_header() {
    let f = fixture();
    let txn_claims = json!({
        "iss": "https://txn.test", "aud": "trust.test", "sub": "alice",
        "iat": f.now, "exp": f.now + 60, "txn": "task-7",
        "scope": "tool:search:read", "req_wl": SPIFFE,
        "tctx": {"ticket": "INC-1"}, "rctx": {"req_ip": "10.0.0.1"},
    });
    let txn = f
        .txn
        .sign(
            txn_claims.as_object().unwrap(),
            Some("txn-1"),
            Some("txntoken+jwt"),
        )
        .unwrap();
    let id = f
        .check(&[("txn-token", &txn), ("x-agent-task", "task-7")])
        .unwrap();
    assert_eq!(id.presented, Presentation::TxnToken);
    assert_eq!(id.binding.task.as_deref(), Some("task-7"));
    assert!(id.binding.workload_claim, "req_wl matched the peer");
    // Not in Authorization.
    let err = f
        .check(&[("authorization", &bearer(&txn)), ("x-agent-task", "task-7")])
        .err();
    assert_eq!(err.as_deref(), Some("token.invalid"));
    // Beside an access token, for the same task.
    let access = f.token(|_| {});
    let id = f
        .check(&[
            ("authorization", &bearer(&access)),
            ("txn-token", &txn),
            ("x-agent-task", "task-7"),
        ])
        .unwrap();
    assert!(id.txn.is_some());
    // An access token naming no task takes the transaction token's task.
    let taskless = f.token(|c| {
        c.remove("task_id");
    });
    let id = f
        .check(&[
            ("authorization", &bearer(&taskless)),
            ("txn-token", &txn),
            ("x-agent-task", "task-7"),
        ])
        .unwrap();
    assert_eq!(id.binding.task.as_deref(), Some("task-7"));
    // Tokens for two different tasks are refused together.
    let other = f.token(|c| {
        c.insert("task_id".into(), json!("task-8"));
    });
    let err = f
        .check(&[
            ("authorization", &bearer(&other)),
            ("txn-token", &txn),
            ("x-agent-task", "task-8"),
        ])
        .err();
    assert_eq!(err.as_deref(), Some("binding.task_mismatch"));
    // Without typ txntoken+jwt it is not a transaction token.
    let untyped = f
        .txn
        .sign(txn_claims.as_object().unwrap(), Some("txn-1"), None)
        .unwrap();
    assert_eq!(
        f.check(&[("txn-token", &untyped), ("x-agent-task", "task-7")])
            .err()
            .as_deref(),
        Some("token.invalid")
    );
}

#[test]
fn a_repeated_token_comes_from_the_cache_until_it_expires() {
    let f = fixture();
    let token = f.token(|c| {
        c.insert("exp".into(), json!(f.now + 60));
    });
    let headers = [
        ("authorization", bearer(&token)),
        ("x-agent-task", "task-7".to_owned()),
    ];
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = authenticate(&f.auth, &view(&refs), f.now).unwrap();
    let second = authenticate(&f.auth, &view(&refs), f.now + 30).unwrap();
    assert!(
        Arc::ptr_eq(&first.token, &second.token),
        "the second Check reused the verified token"
    );
    match authenticate(&f.auth, &view(&refs), f.now + 120) {
        Err(AuthFailure::Denied(err)) => assert_eq!(err.reason().code(), "token.expired"),
        other => panic!("a cached token must still expire: {other:?}"),
    }
}

#[test]
fn eddsa_tokens_verify() {
    let f = fixture();
    let token = f.ed.sign(&f.claims(), Some("ed-1"), None).unwrap();
    assert!(
        f.check(&[
            ("authorization", &bearer(&token)),
            ("x-agent-task", "task-7")
        ])
        .is_ok()
    );
}

/// The whole Check decides at the time it is given: a token good now is expired an
/// hour on and not yet valid an hour before, with no sleeping.
#[test]
fn the_pipeline_decides_at_the_time_it_is_given() {
    let f = fixture();
    let yaml = format!(
        "tokens:\n  issuers:\n    - {{ issuer: {ISS}, audiences: [{AUD}], algorithms: [RS256], jwks: {}, require_workload_binding: false }}\n",
        jwks(&[(&f.rsa, "rsa-1")])
    );
    // No control API: nothing here calls it, and it would write a token.
    let app = leash::app::App::build(
        Config::from_yaml("t.yaml", &yaml, &[("listen.control", String::new())]).unwrap(),
    )
    .unwrap();
    let token = f.token(|_| {});
    let headers = [
        ("authorization", bearer(&token)),
        ("x-agent-task", "task-7".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let req = leash::edge::ingress::sample_request("GET", "/api/items", &headers, "");
    let view = RequestView::try_from(req).unwrap();
    let reason_at = |now: i64| {
        app.authz
            .decider
            .pipeline
            .check(&view, now)
            .decision
            .reason()
            .map(|r| r.code())
    };
    assert!(
        !matches!(reason_at(f.now), Some(r) if r.starts_with("token.")),
        "{:?}",
        reason_at(f.now)
    );
    assert_eq!(reason_at(f.now + 3600), Some("token.expired"));
    assert_eq!(reason_at(f.now - 3600), Some("token.not_yet_valid"));
}
