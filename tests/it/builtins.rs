//! OPA's `io.jwt.*` and `crypto.*` builtins, as leash provides them to regorus, checked
//! against OPA's documented behaviour with real keys.

use crate::common;

use common::keys::{client_certificate, jwks, signing_key};
use jsonwebtoken::Algorithm;
use leash::policy::{EngineKind, PolicySet, PolicySource, Value};
use leash::token::mint::SigningKey;
use serde_json::{Map, json};

/// Evaluates `expr` as the decision, with `input`.
fn eval(expr: &str, input: serde_json::Value) -> (Value, EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("package envoy.authz\nimport rego.v1\nallow := {{\"v\": {expr}}}\n");
    std::fs::write(dir.path().join("p.rego"), policy).unwrap();
    let set = PolicySet::load(
        &PolicySource::Dir(dir.path().to_owned()),
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let result = set.evaluate(Value::from(input)).unwrap();
    let v = match &result {
        Value::Object(o) => o
            .iter()
            .map(|(_, v)| v.clone())
            .next()
            .unwrap_or(Value::Undefined),
        _ => Value::Undefined,
    };
    (v, set.info().engine)
}

fn json_of(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn claims(now: i64) -> Map<String, serde_json::Value> {
    json!({"iss": "https://idp.test", "aud": "tools", "sub": "alice", "exp": now + 60, "nbf": now - 60})
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn decode_returns_header_payload_and_hex_signature_and_runs_on_the_interpreter() {
    let key = signing_key(Algorithm::ES256);
    let token = key.sign(&claims(1000), Some("k1"), None).unwrap();
    let (v, engine) = eval("io.jwt.decode(input.t)", json!({"t": token}));
    assert_eq!(
        engine,
        EngineKind::Interpreter,
        "extensions are interpreter-only"
    );
    let v = json_of(&v);
    assert_eq!(v[0]["alg"], "ES256");
    assert_eq!(v[0]["kid"], "k1");
    assert_eq!(v[1]["sub"], "alice");
    assert_eq!(
        v[2].as_str().unwrap().len(),
        128,
        "64 signature bytes as hex"
    );
    // A malformed token makes the call undefined, as in OPA.
    assert_eq!(
        eval("io.jwt.decode(input.t)", json!({"t": "not-a-jwt"})).0,
        Value::Undefined
    );
}

#[test]
fn verify_functions_check_only_the_signature() {
    let now = leash::clock::unix_now();
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let key = signing_key(alg);
        let other = signing_key(alg);
        let name = match alg {
            Algorithm::RS256 => "rs256",
            Algorithm::PS256 => "ps256",
            Algorithm::ES256 => "es256",
            _ => "eddsa",
        };
        // Expired: verify_* do not look at claims.
        let mut expired = claims(now);
        expired.insert("exp".into(), json!(now - 10));
        let token = key.sign(&expired, None, None).unwrap();
        let expr = format!("io.jwt.verify_{name}(input.t, input.k)");
        let good = eval(&expr, json!({"t": token, "k": jwks(&[(&key, "a")])})).0;
        assert_eq!(good, Value::Bool(true), "{name} with a JWKS");
        let single = key.public_jwk(None).unwrap().to_string();
        assert_eq!(
            eval(&expr, json!({"t": token, "k": single})).0,
            Value::Bool(true),
            "{name} with a JWK"
        );
        let wrong = eval(&expr, json!({"t": token, "k": jwks(&[(&other, "b")])})).0;
        assert_eq!(wrong, Value::Bool(false), "{name} with another key");
    }
    let hs = SigningKey::from_pem(Algorithm::HS256, b"secret").unwrap();
    let token = hs.sign(&claims(now), None, None).unwrap();
    assert_eq!(
        eval(
            "io.jwt.verify_hs256(input.t, \"secret\")",
            json!({"t": token})
        )
        .0,
        Value::Bool(true)
    );
    assert_eq!(
        eval(
            "io.jwt.verify_hs256(input.t, \"wrong\")",
            json!({"t": token})
        )
        .0,
        Value::Bool(false)
    );
}

#[test]
fn verify_accepts_a_pem_certificate() {
    let (cert, key_pem) = client_certificate("spiffe://test/signer");
    let key = SigningKey::from_pem(Algorithm::ES256, key_pem.as_bytes()).unwrap();
    let token = key.sign(&claims(1000), None, None).unwrap();
    let (v, _) = eval(
        "io.jwt.verify_es256(input.t, input.c)",
        json!({"t": token, "c": cert}),
    );
    assert_eq!(v, Value::Bool(true));
}

#[test]
fn decode_verify_checks_constraints_like_opa() {
    let now = leash::clock::unix_now();
    let key = signing_key(Algorithm::RS256);
    let cert = jwks(&[(&key, "a")]);
    let token = key.sign(&claims(now), Some("a"), None).unwrap();
    // An undefined result reads as "<undefined>".
    let check = |constraints: serde_json::Value| {
        json_of(
            &eval(
                "io.jwt.decode_verify(input.t, input.c)",
                json!({"t": token, "c": constraints}),
            )
            .0,
        )
    };
    let ok = check(json!({"cert": cert, "aud": "tools", "iss": "https://idp.test"}));
    assert_eq!(ok[0], true);
    assert_eq!(ok[1]["alg"], "RS256");
    assert_eq!(ok[2]["sub"], "alice");

    let unverified = json!([false, {}, {}]);
    assert_eq!(
        check(json!({"cert": cert, "aud": "other"})),
        unverified,
        "wrong audience"
    );
    assert_eq!(
        check(json!({"cert": cert})),
        unverified,
        "the token has aud and no aud constraint is given"
    );
    assert_eq!(
        check(json!({"cert": cert, "aud": "tools", "iss": "https://evil.test"})),
        unverified,
        "wrong issuer"
    );
    assert_eq!(
        check(json!({"cert": cert, "aud": "tools", "alg": "ES256"})),
        unverified,
        "alg constraint"
    );
    let later_ns = (now + 120) as f64 * 1e9;
    assert_eq!(
        check(json!({"cert": cert, "aud": "tools", "time": later_ns})),
        unverified,
        "expired at `time`"
    );
    let earlier_ns = (now - 120) as f64 * 1e9;
    assert_eq!(
        check(json!({"cert": cert, "aud": "tools", "time": earlier_ns})),
        unverified,
        "before nbf"
    );
    let stranger = jwks(&[(&signing_key(Algorithm::RS256), "a")]);
    assert_eq!(
        check(json!({"cert": stranger, "aud": "tools"})),
        unverified,
        "another key"
    );
    // Constraint errors are errors (undefined), not false.
    let undefined = json!("<undefined>");
    assert_eq!(
        check(json!({"aud": "tools"})),
        undefined,
        "no key constraint"
    );
    assert_eq!(
        check(json!({"cert": cert, "secret": "x"})),
        undefined,
        "two key constraints"
    );
    assert_eq!(
        check(json!({"cert": cert, "bogus": 1})),
        undefined,
        "unknown constraint"
    );

    let hs = SigningKey::from_pem(Algorithm::HS256, b"s3cret").unwrap();
    let hs_token = hs.sign(&claims(now), None, None).unwrap();
    let (v, _) = eval(
        "io.jwt.decode_verify(input.t, {\"secret\": \"s3cret\", \"aud\": \"tools\"})",
        json!({"t": hs_token}),
    );
    assert_eq!(json_of(&v)[0], true);
}

#[test]
fn crypto_hashes_match_known_values() {
    let (sha, _) = eval("crypto.sha256(\"abc\")", json!({}));
    assert_eq!(
        sha,
        Value::from("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    // RFC 4231 test case 2.
    let (mac, _) = eval(
        "crypto.hmac.sha256(\"what do ya want for nothing?\", \"Jefe\")",
        json!({}),
    );
    assert_eq!(
        mac,
        Value::from("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

/// A Check decided at a time of the caller's: `io.jwt.decode_verify` without a `time`
/// constraint reads that time, not the wall clock, so expiry is tested without waiting.
#[test]
fn decode_verify_reads_the_time_the_check_is_decided_at() {
    let issued = 1_700_000_000;
    let key = signing_key(Algorithm::RS256);
    let cert = jwks(&[(&key, "a")]);
    let token = key.sign(&claims(issued), Some("a"), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package envoy.authz\nimport rego.v1\nallow := io.jwt.decode_verify(input.t, {\"cert\": input.c, \"aud\": \"tools\"})[0]\n",
    )
    .unwrap();
    let set = PolicySet::load(
        &PolicySource::Dir(dir.path().to_owned()),
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let input = Value::from(json!({"t": token, "c": cert}));
    let valid_at = |now: i64| set.evaluate_at(input.clone(), now).unwrap() == Value::Bool(true);
    assert!(valid_at(issued), "within its lifetime");
    assert!(!valid_at(issued + 61), "past exp");
    assert!(!valid_at(issued - 61), "before nbf");
    // Without a time of its own, an evaluation reads the wall clock: long after exp.
    assert_eq!(set.evaluate(input).unwrap(), Value::Bool(false));
}
