use super::*;

#[test]
fn every_reason_sits_at_its_index() {
    for (i, reason) in DenyReason::ALL.iter().enumerate() {
        assert_eq!(reason.index(), i, "{reason}");
    }
}

#[test]
fn reason_codes_are_unique_and_dotted() {
    let codes: std::collections::BTreeSet<&str> =
        DenyReason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), DenyReason::ALL.len());
    for code in codes {
        let (family, name) = code.split_once('.').unwrap();
        assert!(
            [
                "policy", "request", "token", "binding", "dpop", "mcp", "agent", "human",
                "workload", "subject", "task", "session", "approval", "mint",
            ]
            .contains(&family),
            "{code}"
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{code}"
        );
    }
}

#[test]
fn statuses_envoy_does_not_define_are_refused() {
    assert_eq!(HttpStatus::new(401).map(HttpStatus::code), Some(401));
    assert_eq!(HttpStatus::new(429).map(HttpStatus::code), Some(429));
    for code in [0, 418, 451, 599, 1000, -1, i64::from(u16::MAX) + 403] {
        assert_eq!(HttpStatus::new(code), None, "{code}");
    }
}

#[test]
fn a_policy_denial_keeps_its_stated_reason_for_the_log() {
    let decision = Decision::from_policy(PolicyAnswer::Deny {
        response: DenyResponse::default(),
        metadata: Metadata::new(),
        stated_reason: Some("tool not allowed".into()),
    });
    let Decision::Deny(denial) = &decision else {
        panic!("not a denial")
    };
    assert_eq!(denial.reason(), DenyReason::PolicyDenied);
    assert_eq!(denial.detail(), Some("tool not allowed"));
    assert_eq!(denial.response().status, HttpStatus::FORBIDDEN);
}
