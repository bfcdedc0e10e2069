//! OPA builtins regorus lacks, added as extensions so policies written for OPA's Envoy
//! plugin run unchanged: `io.jwt.decode`, `io.jwt.decode_verify`,
//! `io.jwt.verify_{rs,ps,es,hs}{256,384,512}` and `io.jwt.verify_eddsa` (on
//! jsonwebtoken), `crypto.sha256` and `crypto.hmac.sha256`.
//!
//! regorus's bytecode VM cannot call extensions: a policy that uses one is served by
//! the interpreter, and `Status` and the log say so.
//!
//! As in OPA, a builtin that fails (a malformed token, unusable key material) makes its
//! expression undefined instead of failing the evaluation.

use std::cell::Cell;

use jsonwebtoken::Algorithm;
use regorus::{Engine, Value};
use sha2::{Digest, Sha256};

use super::opa::{self, hex};

type Builtin = fn(&[Value]) -> Result<Value, String>;

thread_local! {
    /// The time a Check is decided at (Unix seconds), for the builtins that read "now"
    /// (`io.jwt.decode_verify` without a `time` constraint): the caller read its clock
    /// at the edge, and tests pass any time they like. Set for one evaluation.
    static NOW: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Runs `evaluate` with the builtins reading `now` as the current time.
pub(crate) fn at<T>(now: i64, evaluate: impl FnOnce() -> T) -> T {
    let before = NOW.with(|cell| cell.replace(Some(now)));
    let out = evaluate();
    NOW.with(|cell| cell.set(before));
    out
}

const VERIFIERS: [(&str, Algorithm); 12] = [
    ("io.jwt.verify_rs256", Algorithm::RS256),
    ("io.jwt.verify_rs384", Algorithm::RS384),
    ("io.jwt.verify_rs512", Algorithm::RS512),
    ("io.jwt.verify_ps256", Algorithm::PS256),
    ("io.jwt.verify_ps384", Algorithm::PS384),
    ("io.jwt.verify_ps512", Algorithm::PS512),
    ("io.jwt.verify_es256", Algorithm::ES256),
    ("io.jwt.verify_es384", Algorithm::ES384),
    ("io.jwt.verify_hs256", Algorithm::HS256),
    ("io.jwt.verify_hs384", Algorithm::HS384),
    ("io.jwt.verify_hs512", Algorithm::HS512),
    ("io.jwt.verify_eddsa", Algorithm::EdDSA),
];

/// Adds every builtin to `engine`.
pub fn register(engine: &mut Engine) -> anyhow::Result<()> {
    let simple: [(&str, u8, Builtin); 4] = [
        ("io.jwt.decode", 1, decode),
        ("io.jwt.decode_verify", 2, decode_verify),
        ("crypto.sha256", 1, sha256),
        ("crypto.hmac.sha256", 2, hmac_sha256),
    ];
    for (name, nargs, f) in simple {
        engine.add_extension(
            name.to_owned(),
            nargs,
            Box::new(move |args: Vec<Value>| Ok(undefined_on_error(f(&args)))),
        )?;
    }
    for (name, alg) in VERIFIERS {
        engine.add_extension(
            name.to_owned(),
            2,
            Box::new(move |args: Vec<Value>| Ok(undefined_on_error(verify(&args, alg)))),
        )?;
    }
    Ok(())
}

fn undefined_on_error(result: Result<Value, String>) -> Value {
    result.unwrap_or(Value::Undefined)
}

fn string_arg(args: &[Value], i: usize) -> Result<&str, String> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("operand {} must be a string", i + 1)),
    }
}

fn decode(args: &[Value]) -> Result<Value, String> {
    let (header, payload, signature) = opa::decode(string_arg(args, 0)?)?;
    Ok(Value::from(vec![
        Value::from(header),
        Value::from(payload),
        Value::from(signature),
    ]))
}

fn verify(args: &[Value], alg: Algorithm) -> Result<Value, String> {
    opa::verify(string_arg(args, 0)?, string_arg(args, 1)?, alg).map(Value::Bool)
}

fn decode_verify(args: &[Value]) -> Result<Value, String> {
    let jwt = string_arg(args, 0)?;
    let constraints = match args.get(1).map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => return Err("operand 2 must be an object".into()),
    };
    // Evaluations outside a Check (`leash test`, a hand-written input document) are
    // given no time: theirs is the wall clock, as in OPA.
    let now = NOW.with(Cell::get).unwrap_or_else(crate::clock::unix_now);
    #[expect(
        clippy::cast_precision_loss,
        reason = "OPA's time constraint is a float of ns"
    )]
    let now_ns = now as f64 * 1e9;
    let (valid, header, payload) = opa::decode_verify(jwt, &constraints, now_ns)?;
    Ok(Value::from(vec![
        Value::Bool(valid),
        Value::from(header),
        Value::from(payload),
    ]))
}

fn sha256(args: &[Value]) -> Result<Value, String> {
    Ok(Value::from(hex(&Sha256::digest(
        string_arg(args, 0)?.as_bytes(),
    ))))
}

fn hmac_sha256(args: &[Value]) -> Result<Value, String> {
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        string_arg(args, 1)?.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, string_arg(args, 0)?.as_bytes());
    Ok(Value::from(hex(tag.as_ref())))
}
