use std::sync::Arc;

use super::ops::{self, By};
use super::*;

const BY: By<'static> = By {
    caller: "oncall",
    now: 1_000,
};

fn who<'a>() -> Who<'a> {
    Who {
        issuer: "https://idp",
        jti: Some("j1"),
        iat: Some(900),
        subject: Some("alice"),
        agent: Some("planner"),
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
        ops::revoke_subject("agent", "planner", "", 950, "", BY).unwrap(),
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
    let s = applied(
        &Snapshot::default(),
        ops::revoke_subject("subject", "alice", "https://idp", 950, "", BY).unwrap(),
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
    let s = applied(
        &Snapshot::default(),
        ops::revoke_token("https://idp", "j1", 0, "", 600, BY).unwrap(),
    );
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
                changes.extend(ops::revoke_token("https://idp", "j1", 0, "", 600, BY)?);
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
        assert_eq!(feed.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3]);
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
    for i in 0..100_000 {
        s.apply(&ops::revoke_token("https://idp", &format!("j{i}"), 0, "", 600, BY).unwrap()[0]);
    }
    let mut current = Arc::new(s);
    for i in 0..10_000 {
        let mut next = Snapshot::clone(&current);
        next.apply(&ops::revoke_token("https://idp", &format!("k{i}"), 0, "", 600, BY).unwrap()[0]);
        current = Arc::new(next);
    }
    assert_eq!(current.counts()[1], 110_000);
}
