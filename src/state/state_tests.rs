use std::sync::Arc;

use super::ops::{self, By};
use super::*;

const BY: By<'static> = By {
    caller: "oncall",
    now: 1_000,
};

const ISSUERS: &[String] = &[];

fn trust(issuers: &[String]) -> ops::Trust<'_> {
    ops::Trust {
        issuers,
        longest: 600,
        leeway: 5,
    }
}

fn idp() -> Vec<String> {
    vec!["https://idp".to_owned()]
}

fn subject<'a>(kind: &'a str, id: &'a str, issuer: &'a str, after: i64) -> ops::Subject<'a> {
    ops::Subject {
        kind,
        id,
        issuer,
        after,
    }
}

fn revoke_token(s: &Snapshot, jti: &str, expires_at: i64) -> Vec<Change> {
    ops::revoke_token(s, "https://idp", jti, expires_at, "", trust(&idp()), BY).unwrap()
}

fn who<'a>() -> Who<'a> {
    Who {
        issuer: "https://idp",
        jti: Some("j1"),
        iat: Some(900),
        subject: Some("alice"),
        agent: Some("planner"),
        actors: &[],
        human: Some("alice"),
        workload: Some("spiffe://w"),
        task: Some("t1"),
    }
}

fn applied(snapshot: &Snapshot, changes: Vec<Change>) -> Snapshot {
    let mut next = snapshot.clone();
    for c in &changes {
        next.apply(c);
    }
    next
}

fn reason_of(snapshot: &Snapshot, who: &Who<'_>, now: i64) -> Option<String> {
    snapshot.standing(who, now).err().map(|hold| match hold {
        Hold::TokenRevoked(_) => "token".to_owned(),
        Hold::SubjectRevoked(r) => r.kind.name().to_owned(),
        Hold::TaskEnded(t) => t.status.name().to_owned(),
        Hold::SessionPaused(_) => "paused".to_owned(),
    })
}

#[test]
fn an_empty_state_holds_nothing_against_anyone() {
    let empty = Snapshot::default();
    let live = empty.standing(&who(), 1_000).unwrap();
    assert!(live.task.is_none() && live.session.is_none());
}

#[test]
fn a_subject_revocation_covers_tokens_issued_until_then_and_tokens_without_iat() {
    let s = Snapshot::default();
    let s = applied(
        &s,
        ops::revoke_subject(
            &s,
            &subject("agent", "planner", "", 950),
            "",
            trust(ISSUERS),
            BY,
        )
        .unwrap(),
    );
    assert_eq!(reason_of(&s, &who(), 1_000).as_deref(), Some("agent"));
    let later = Who {
        iat: Some(951),
        ..who()
    };
    assert_eq!(reason_of(&s, &later, 1_000), None);
    let no_iat = Who { iat: None, ..who() };
    assert_eq!(reason_of(&s, &no_iat, 1_000).as_deref(), Some("agent"));
    // One issuer's subject: the same `sub` from another issuer passes.
    let empty = Snapshot::default();
    let s = applied(
        &empty,
        ops::revoke_subject(
            &empty,
            &subject("subject", "alice", "https://idp", 950),
            "",
            trust(&idp()),
            BY,
        )
        .unwrap(),
    );
    assert_eq!(reason_of(&s, &who(), 1_000).as_deref(), Some("subject"));
    let elsewhere = Who {
        issuer: "https://other",
        ..who()
    };
    assert_eq!(reason_of(&s, &elsewhere, 1_000), None);
}

#[test]
fn a_token_revocation_is_by_issuer_and_jti() {
    let empty = Snapshot::default();
    let s = applied(&empty, revoke_token(&empty, "j1", 0));
    assert_eq!(reason_of(&s, &who(), 1_000).as_deref(), Some("token"));
    let other = Who {
        issuer: "https://other",
        ..who()
    };
    assert_eq!(reason_of(&s, &other, 1_000), None);
    // Kept as long as the token can live, then swept.
    assert!(s.expired(1_599).is_empty());
    let swept = applied(&s, s.expired(1_600));
    assert_eq!(reason_of(&swept, &who(), 1_600), None);
}

#[test]
fn pauses_hold_per_task_or_on_every_task_and_run_out() {
    let s = Snapshot::default();
    let on_t1 = applied(
        &s,
        ops::pause_session(&s, "planner", "t1", "why", 60, BY).unwrap(),
    );
    assert_eq!(reason_of(&on_t1, &who(), 1_000).as_deref(), Some("paused"));
    let t2 = Who {
        task: Some("t2"),
        ..who()
    };
    assert_eq!(reason_of(&on_t1, &t2, 1_000), None);
    assert_eq!(reason_of(&on_t1, &who(), 1_060), None, "the pause ran out");
    let everywhere = applied(
        &s,
        ops::pause_session(&s, "planner", "", "why", 0, BY).unwrap(),
    );
    assert_eq!(
        reason_of(&everywhere, &t2, 99_999).as_deref(),
        Some("paused")
    );
    let resumed = applied(
        &everywhere,
        ops::resume_session(&everywhere, "planner", "").unwrap(),
    );
    assert_eq!(reason_of(&resumed, &t2, 1_000), None);
}

#[test]
fn an_ended_task_stays_ended_when_a_check_sees_it_again() {
    let (updater, _rx) = Updater::open(Box::new(
        RedbStore::open(&tempfile::tempdir().unwrap().keep().join("s.redb")).unwrap(),
    ))
    .unwrap();
    updater
        .update_blocking("oncall", 1_000, |s| {
            ops::complete_task(s, "t1", "done", false, BY)
        })
        .unwrap();
    // A sighting made from a snapshot before the completion must not reopen it.
    let sighting = vec![Sighting {
        task: Arc::from("t1"),
        human: None,
        agent: Some(Arc::from("late")),
        at: 999,
    }];
    updater
        .update_blocking("leash", 1_001, move |s| {
            Ok(super::updater::sighted(s, &sighting))
        })
        .unwrap();
    let snapshot = updater.state().snapshot();
    let task = snapshot.task("t1").unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.agents, [Arc::<str>::from("late")]);
}

#[test]
fn the_store_gives_back_what_was_committed_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.redb");
    {
        let (updater, _rx) = Updater::open(Box::new(RedbStore::open(&path).unwrap())).unwrap();
        let seq = updater
            .update_blocking("oncall", 1_000, |s| {
                let mut changes = ops::complete_task(s, "t1", "done", true, BY)?;
                changes.extend(revoke_token(s, "j1", 0));
                changes.extend(ops::report_risk(
                    &ops::Report {
                        subject_kind: "task",
                        subject_id: "t1",
                        kind: "k",
                        score: 70,
                        source: "s",
                        ttl_seconds: 60,
                    },
                    BY,
                )?);
                Ok(changes)
            })
            .unwrap();
        assert_eq!(seq, 3);
        let err = RedbStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("state.path"), "{err}");
        let feed = updater.store().changes_since(1).unwrap().unwrap();
        assert_eq!(feed.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(feed.iter().all(|e| &*e.by == "oncall" && e.at == 1_000));
    }
    let (updater, _rx) = Updater::open(Box::new(RedbStore::open(&path).unwrap())).unwrap();
    let snapshot = updater.state().snapshot();
    assert_eq!(snapshot.seq, 3);
    assert_eq!(snapshot.counts(), [1, 1, 0, 0, 1]);
    assert_eq!(
        reason_of(&snapshot, &who(), 1_000).as_deref(),
        Some("token")
    );
    let fresh = Who { jti: None, ..who() };
    assert_eq!(
        reason_of(&snapshot, &fresh, 1_000).as_deref(),
        Some("revoked")
    );
}

#[test]
fn publishing_a_change_shares_the_untouched_state() {
    // 100 000 revocations, then 10 000 more one by one: each publish copies a path,
    // so this finishes in well under a second in release and a few in debug.
    let mut s = Snapshot::default();
    let empty = Snapshot::default();
    for i in 0..100_000 {
        s.apply(&revoke_token(&empty, &format!("j{i}"), 0)[0]);
    }
    let mut current = Arc::new(s);
    for i in 0..10_000 {
        let mut next = Snapshot::clone(&current);
        next.apply(&revoke_token(&empty, &format!("k{i}"), 0)[0]);
        current = Arc::new(next);
    }
    assert_eq!(current.counts()[1], 110_000);
}

#[test]
fn a_revoked_or_paused_agent_does_not_act_through_another() {
    let empty = Snapshot::default();
    let actors = ["delegate".to_owned(), "planner".to_owned()];
    let through = Who {
        agent: Some("delegate"),
        actors: &actors,
        ..who()
    };
    let revoked = applied(
        &empty,
        ops::revoke_subject(
            &empty,
            &subject("agent", "planner", "", 950),
            "",
            trust(ISSUERS),
            BY,
        )
        .unwrap(),
    );
    assert_eq!(
        reason_of(&revoked, &through, 1_000).as_deref(),
        Some("agent")
    );
    let paused = applied(
        &empty,
        ops::pause_session(&empty, "planner", "t1", "", 0, BY).unwrap(),
    );
    assert_eq!(
        reason_of(&paused, &through, 1_000).as_deref(),
        Some("paused")
    );
}

#[test]
fn a_later_change_never_weakens_an_earlier_one() {
    let s = Snapshot::default();
    // A second subject revocation with an earlier moment keeps the later one.
    let s = applied(
        &s,
        ops::revoke_subject(
            &s,
            &subject("agent", "planner", "", 950),
            "",
            trust(ISSUERS),
            BY,
        )
        .unwrap(),
    );
    let s = applied(
        &s,
        ops::revoke_subject(
            &s,
            &subject("agent", "planner", "", 100),
            "",
            trust(ISSUERS),
            BY,
        )
        .unwrap(),
    );
    assert_eq!(reason_of(&s, &who(), 1_000).as_deref(), Some("agent"));
    // A pause with a deadline does not shorten one held until resumed.
    let s = applied(&s, ops::pause_session(&s, "x", "t1", "", 0, BY).unwrap());
    let s = applied(&s, ops::pause_session(&s, "x", "t1", "", 10, BY).unwrap());
    assert!(s.session("x", "t1").unwrap().paused(99_999).is_some());
    // A token revocation given an `exp` long gone is kept from now, not from then.
    let s = applied(&s, revoke_token(&s, "old", 5));
    assert!(
        s.expired(1_599)
            .iter()
            .all(|c| c.key().table != Table::Tokens)
    );
}

#[test]
fn revocations_name_trusted_issuers_exactly() {
    let s = Snapshot::default();
    let wrong = ops::revoke_token(&s, "https://idp/", "j1", 0, "", trust(&idp()), BY);
    assert!(matches!(wrong, Err(UpdateError::Invalid(m)) if m.contains("https://idp")));
    let stray_issuer = ops::revoke_subject(
        &s,
        &subject("agent", "planner", "https://idp", 0),
        "",
        trust(&idp()),
        BY,
    );
    assert!(matches!(stray_issuer, Err(UpdateError::Invalid(_))));
    // By default a subject revocation also covers the leeway ahead of now.
    let s = applied(
        &s,
        ops::revoke_subject(
            &s,
            &subject("human", "alice", "", 0),
            "",
            trust(ISSUERS),
            BY,
        )
        .unwrap(),
    );
    let fast_clock = Who {
        iat: Some(1_004),
        ..who()
    };
    assert_eq!(reason_of(&s, &fast_clock, 1_000).as_deref(), Some("human"));
}

#[test]
fn ids_no_operator_could_name_are_ungovernable() {
    assert_eq!(who().ungovernable(), None);
    for bad in ["a\u{7f}", "a\u{85}b", "\u{9f}", "t\n", ""] {
        assert!(!ops::valid_id(bad), "{bad:?}");
    }
    for good in ["é¡ü", "spiffe://x/y", "\u{a0}", "日本"] {
        assert!(ops::valid_id(good), "{good:?}");
    }
    // The byte-wise test agrees with `char::is_control` on every character.
    for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
        let id = format!("a{c}b");
        assert_eq!(ops::valid_id(&id), !c.is_control(), "{c:?}");
    }
    let long = "a".repeat(ops::MAX_ID_BYTES + 1);
    let tab = Who {
        task: Some("t\t1"),
        ..who()
    };
    assert_eq!(tab.ungovernable().map(|(w, _)| w), Some("task"));
    let actors = [long];
    let long_actor = Who {
        actors: &actors,
        ..who()
    };
    assert_eq!(long_actor.ungovernable().map(|(w, _)| w), Some("act"));
}

#[test]
fn ended_tasks_are_kept_a_week_then_swept() {
    let s = Snapshot::default();
    let s = applied(&s, ops::complete_task(&s, "t1", "", false, BY).unwrap());
    assert!(s.expired(1_000 + ENDED_TASK_RETENTION - 1).is_empty());
    let swept = applied(&s, s.expired(1_000 + ENDED_TASK_RETENTION));
    assert!(swept.task("t1").is_none());
}

#[test]
fn requests_for_one_action_share_an_approval_id_until_it_is_decided() {
    let first = Binding::request_id("digest-a", None);
    // Two Checks asking at once, before the first request is recorded, name the same
    // approval, so both agents poll the one the updater keeps.
    assert_eq!(first, Binding::request_id("digest-a", None));
    assert_ne!(first, Binding::request_id("digest-b", None));
    // Once it is decided or expired, the next request has an id of its own.
    let next = Binding::request_id("digest-a", Some(&first));
    assert_ne!(next, first);
    assert_eq!(next, Binding::request_id("digest-a", Some(&first)));
    assert_eq!(first.len(), 36);
}

mod behaviour {
    use super::super::behaviour::{Behaviour, Observation, Rule, Trigger};

    fn rule(name: &str, trigger: Trigger, at_least: u64, within: i64) -> Rule {
        Rule {
            name: name.to_owned(),
            trigger,
            at_least,
            within,
            pause_for: None,
        }
    }

    fn call<'a>(at: i64, class: usize, tool: Option<&'a str>, denied: bool) -> Observation<'a> {
        Observation {
            agent: "planner",
            task: "t1",
            class: Some(class),
            tool,
            denied,
            body_bytes: 10,
            at,
            task_since: Some(0),
        }
    }

    #[test]
    fn denials_within_the_window_fire_once_and_old_ones_fall_out() {
        let b = Behaviour::new(vec![rule("denials", Trigger::Denials, 3, 60)], 1000);
        assert_eq!(b.observe(&call(1_000, 0, None, true)), None);
        assert_eq!(b.observe(&call(1_010, 0, None, true)), None);
        // Two minutes later the first two are out of the window.
        assert_eq!(b.observe(&call(1_130, 0, None, true)), None);
        assert_eq!(b.observe(&call(1_131, 0, None, false)), None);
        assert_eq!(b.observe(&call(1_132, 0, None, true)), None);
        let fired = b
            .observe(&call(1_133, 0, None, true))
            .expect("three denials");
        assert_eq!(fired.rule, "denials");
        assert!(
            fired.detail.contains("3 denials within 60 s"),
            "{}",
            fired.detail
        );
        // It does not fire again while the pause it asked for is on its way.
        assert_eq!(b.observe(&call(1_134, 0, None, true)), None);
        let counts = b.counts("planner", "t1", 1_134);
        assert_eq!((counts.denials, counts.calls), (4, [5, 0, 0]));
        assert_eq!(counts.body_bytes, 50);
    }

    #[test]
    fn a_firing_rule_holds_the_session_until_its_pause_is_recorded() {
        use super::super::behaviour::HOLD_SECONDS;
        let b = Behaviour::new(vec![rule("denials", Trigger::Denials, 2, 60)], 1000);
        assert_eq!(b.held("planner", "t1", 1_000), None);
        b.observe(&call(1_000, 0, None, true));
        assert_eq!(b.held("planner", "t1", 1_000), None);
        assert!(b.observe(&call(1_001, 0, None, true)).is_some());
        // Every Check of the session is refused from now, not only the one that tripped
        // the rule, while the updater records the pause.
        let why = b.held("planner", "t1", 1_001).expect("held");
        assert!(why.contains("behaviour rule \"denials\""), "{why}");
        assert!(b.held("planner", "t1", 1_001 + HOLD_SECONDS - 1).is_some());
        assert_eq!(b.held("planner", "t1", 1_001 + HOLD_SECONDS), None);
        // Other sessions are not held.
        assert_eq!(b.held("other", "t1", 1_001), None);
        // A pause that could not be sent lets the rule fire again, and lifts the hold.
        b.rearm("planner", "t1");
        assert_eq!(b.held("planner", "t1", 1_001), None);
    }

    #[test]
    fn a_class_rule_counts_only_its_class_and_sessions_apart() {
        let b = Behaviour::new(vec![rule("destructive", Trigger::Class(2), 2, 600)], 1000);
        assert_eq!(b.observe(&call(0, 1, None, false)), None);
        assert_eq!(b.observe(&call(1, 2, None, false)), None);
        let other = Observation {
            agent: "other",
            ..call(2, 2, None, false)
        };
        assert_eq!(b.observe(&other), None);
        assert!(b.observe(&call(3, 2, None, false)).is_some());
    }

    #[test]
    fn a_new_tool_pauses_only_once_the_task_has_settled() {
        let b = Behaviour::new(
            vec![rule("new-tool", Trigger::NewTool { after: 600 }, 1, 600)],
            1000,
        );
        assert_eq!(b.observe(&call(10, 0, Some("search"), false)), None);
        assert_eq!(b.observe(&call(700, 0, Some("search"), false)), None);
        let fired = b
            .observe(&call(701, 0, Some("delete_repo"), false))
            .expect("a new tool");
        assert!(fired.detail.contains("delete_repo"));
        assert_eq!(b.counts("planner", "t1", 701).tools, 2);
    }

    #[test]
    fn a_full_table_makes_room_for_a_new_session_rather_than_not_counting_it() {
        // Room for one session per shard: every new session finds its shard full of
        // live ones, and is still counted and held to the rules.
        let b = Behaviour::new(vec![rule("denials", Trigger::Denials, 2, 600)], 1);
        for i in 0..64 {
            let filler = format!("filler-{i}");
            let o = Observation {
                agent: &filler,
                ..call(100, 0, None, false)
            };
            assert_eq!(b.observe(&o), None);
        }
        assert_eq!(b.observe(&call(200, 0, None, true)), None);
        assert!(
            b.observe(&call(201, 0, None, true)).is_some(),
            "the newest session is counted, whatever else is live"
        );
    }
}

#[test]
fn an_approval_binds_the_whole_call() {
    let party = Party {
        issuer: "https://idp",
        task: "t1",
        agent: "planner",
        human: Some("alice"),
    };
    let http = |url: &str, body: &[u8]| Binding::http(party, "DELETE", url, body).digest();
    let base = http("https://api.x/repos/r?dry_run=1", b"");
    for other in [
        http("https://api.x/repos/r?force=1", b""),
        http("https://api.x:8443/repos/r?dry_run=1", b""),
        http("http://api.x/repos/r?dry_run=1", b""),
        http("https://api.x/repos/r?dry_run=1", b"{}"),
        Binding::http(party, "POST", "https://api.x/repos/r?dry_run=1", b"").digest(),
        Binding::http(
            Party {
                issuer: "https://other",
                ..party
            },
            "DELETE",
            "https://api.x/repos/r?dry_run=1",
            b"",
        )
        .digest(),
    ] {
        assert_ne!(other, base);
    }
    let tool = |server: &str, args: &str| Binding::tool(party, "drop", server, args).digest();
    assert_ne!(
        tool("https://sandbox/mcp", "{}"),
        tool("https://prod/mcp", "{}")
    );
    assert_ne!(
        tool("https://prod/mcp", r#"{"a":1}"#),
        tool("https://prod/mcp", r#"{"a":2}"#)
    );
    assert_eq!(
        tool("https://prod/mcp", "{}"),
        tool("https://prod/mcp", "{}")
    );
}

#[test]
fn an_approved_approval_can_be_withdrawn_and_asking_has_a_limit() {
    let party = Party {
        issuer: "https://idp",
        task: "t1",
        agent: "planner",
        human: None,
    };
    let asked = |i: usize| {
        let binding = Binding::http(party, "DELETE", &format!("https://x/{i}"), b"");
        Approval {
            id: Arc::from(format!("a{i}")),
            digest: Arc::from(binding.digest()),
            binding,
            reason: String::new(),
            status: ApprovalStatus::Pending,
            requested_at: 1_000,
            expires_at: 1_000 + ops::APPROVAL_WAIT,
            uses_left: 0,
            decided_by: None,
            decided_reason: None,
        }
    };
    let mut s = Snapshot::default();
    for i in 0..ops::MAX_WAITING_PER_SESSION + 3 {
        let changes = ops::request_approval(&s, asked(i));
        s = applied(&s, changes);
    }
    assert_eq!(s.approvals().count(), ops::MAX_WAITING_PER_SESSION);
    // Checks on a task look for an approval only while it has one.
    assert!(s.approvals_on("t1") && !s.approvals_on("t2"));
    let ids: Vec<Arc<str>> = s.approvals().map(|a| a.id.clone()).collect();
    let (last, others) = ids.split_last().unwrap();
    let fewer = applied(
        &s,
        others
            .iter()
            .map(|id| Change::Delete(Key::approval(id)))
            .collect(),
    );
    assert!(fewer.approvals_on("t1"));
    let none = applied(&fewer, vec![Change::Delete(Key::approval(last))]);
    assert!(!none.approvals_on("t1"));
    let s = applied(&s, ops::approve(&s, "a0", 5, 0, "", BY).unwrap());
    let swept = applied(
        &s,
        ids.iter()
            .map(|id| Change::Delete(Key::approval(id)))
            .collect(),
    );
    assert!(
        !swept.approvals_on("t1"),
        "a decision updates, it adds no count"
    );
    assert!(s.approval("a0").unwrap().usable(1_000));
    let s = applied(
        &s,
        ops::deny_approval(&s, "a0", "changed my mind", BY).unwrap(),
    );
    assert!(!s.approval("a0").unwrap().usable(1_000));
}

#[test]
fn the_approvals_count_follows_an_approval_that_moves_to_another_task() {
    let on = |task: &str| {
        let binding = Binding::http(
            Party {
                issuer: "https://idp",
                task,
                agent: "planner",
                human: None,
            },
            "DELETE",
            "https://x/repo",
            b"",
        );
        Change::Put(Record::Approval(Box::new(Approval {
            id: Arc::from("a1"),
            digest: Arc::from(binding.digest()),
            binding,
            reason: String::new(),
            status: ApprovalStatus::Pending,
            requested_at: 1_000,
            expires_at: 2_000,
            uses_left: 0,
            decided_by: None,
            decided_reason: None,
        })))
    };
    let s = applied(&Snapshot::default(), vec![on("t1"), on("t2")]);
    assert!(!s.approvals_on("t1") && s.approvals_on("t2"));
    let s = applied(&s, vec![Change::Delete(Key::approval("a1"))]);
    assert!(!s.approvals_on("t2"));
}
