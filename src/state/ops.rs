//! The operator's changes to the live context, as pure functions of the snapshot
//! serving: each checks its arguments and returns the records to write. Front ends
//! (the control API, later SSF/CAEP receivers) only convert in and out.

use std::sync::Arc;

use super::{
    Change, Key, Pause, Record, RiskSignal, RiskSubject, Session, Snapshot, SubjectKind,
    SubjectRevocation, TaskStatus, TokenRevocation, UpdateError,
};

/// Who asks, and when (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub caller: &'a str,
    pub now: i64,
}

/// Ids become store keys and log fields: bounded, and free of control characters.
fn id<'a>(what: &str, value: &'a str) -> Result<&'a str, UpdateError> {
    if value.is_empty() {
        return Err(UpdateError::Invalid(format!("{what} is required")));
    }
    if value.len() > 512 || value.chars().any(char::is_control) {
        return Err(UpdateError::Invalid(format!(
            "{what} must be at most 512 bytes without control characters"
        )));
    }
    Ok(value)
}

fn reason(value: &str) -> Result<String, UpdateError> {
    if value.len() > 1024 {
        return Err(UpdateError::Invalid(
            "reason is longer than 1024 bytes".into(),
        ));
    }
    Ok(value.chars().filter(|c| !c.is_control()).collect())
}

pub fn complete_task(
    snapshot: &Snapshot,
    task: &str,
    why: &str,
    revoke: bool,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let task = id("task", task)?;
    let why = reason(why)?;
    // A task not seen yet can be ended ahead of its first Check: it never starts.
    let mut record = snapshot.task(task).cloned().unwrap_or_else(|| super::Task {
        id: Arc::from(task),
        human: None,
        agents: Vec::new(),
        status: TaskStatus::Active,
        first_seen: by.now,
        ended: None,
        ended_by: None,
        end_reason: None,
    });
    record.status = if revoke {
        TaskStatus::Revoked
    } else {
        TaskStatus::Completed
    };
    record.ended = Some(by.now);
    record.ended_by = Some(by.caller.to_owned());
    record.end_reason = Some(why);
    Ok(vec![Change::Put(Record::Task(record))])
}

pub fn revoke_token(
    issuer: &str,
    jti: &str,
    expires_at: i64,
    why: &str,
    longest: i64,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let until = if expires_at > 0 {
        expires_at.saturating_add(longest)
    } else {
        by.now.saturating_add(longest)
    };
    Ok(vec![Change::Put(Record::Token(TokenRevocation {
        issuer: Arc::from(id("issuer", issuer)?),
        jti: Arc::from(id("jti", jti)?),
        until,
        at: by.now,
        by: by.caller.to_owned(),
        reason: reason(why)?,
    }))])
}

pub fn revoke_subject(
    kind: &str,
    subject: &str,
    issuer: &str,
    after: i64,
    why: &str,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let kind = SubjectKind::parse(kind).ok_or_else(|| {
        UpdateError::Invalid(format!(
            "kind {kind:?}: use agent, human, workload or subject"
        ))
    })?;
    let issuer = match kind {
        SubjectKind::Subject => Some(Arc::from(id("issuer", issuer)?)),
        _ => None,
    };
    Ok(vec![Change::Put(Record::Subject(SubjectRevocation {
        kind,
        id: Arc::from(id("id", subject)?),
        issuer,
        after: if after > 0 { after } else { by.now },
        // Kept: a token without `iat` is refused for as long as the entry exists,
        // and no lifetime bounds when such a token was issued.
        until: i64::MAX,
        by: by.caller.to_owned(),
        reason: reason(why)?,
    }))])
}

pub fn pause_session(
    snapshot: &Snapshot,
    agent: &str,
    task: &str,
    why: &str,
    ttl_seconds: u64,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let agent = id("agent", agent)?;
    if !task.is_empty() {
        id("task", task)?;
    }
    let mut session = snapshot
        .session(agent, task)
        .cloned()
        .unwrap_or_else(|| Session {
            agent: Arc::from(agent),
            task: Arc::from(task),
            first_seen: by.now,
            pause: None,
        });
    let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
    session.pause = Some(Pause {
        reason: reason(why)?,
        by: by.caller.to_owned(),
        at: by.now,
        until: (ttl > 0).then(|| by.now.saturating_add(ttl)),
    });
    Ok(vec![Change::Put(Record::Session(session))])
}

pub fn resume_session(
    snapshot: &Snapshot,
    agent: &str,
    task: &str,
) -> Result<Vec<Change>, UpdateError> {
    let mut session = snapshot
        .session(id("agent", agent)?, task)
        .filter(|s| s.pause.is_some())
        .cloned()
        .ok_or_else(|| {
            UpdateError::NotFound(format!("agent {agent:?} is not paused on task {task:?}"))
        })?;
    session.pause = None;
    Ok(vec![Change::Put(Record::Session(session))])
}

fn risk_subject(kind: &str) -> Result<RiskSubject, UpdateError> {
    RiskSubject::parse(kind).ok_or_else(|| {
        UpdateError::Invalid(format!(
            "subject kind {kind:?}: use agent, human, workload or task"
        ))
    })
}

pub struct Report<'a> {
    pub subject_kind: &'a str,
    pub subject_id: &'a str,
    pub kind: &'a str,
    pub score: u32,
    pub source: &'a str,
    pub ttl_seconds: u64,
}

pub fn report_risk(report: &Report<'_>, by: By<'_>) -> Result<Vec<Change>, UpdateError> {
    let score = u8::try_from(report.score)
        .ok()
        .filter(|s| *s <= 100)
        .ok_or_else(|| UpdateError::Invalid(format!("score {} is not 0 to 100", report.score)))?;
    if report.ttl_seconds == 0 {
        return Err(UpdateError::Invalid(
            "ttl_seconds is required: a signal that never expires is a standing ban (revoke the subject instead)".into(),
        ));
    }
    let ttl = i64::try_from(report.ttl_seconds).unwrap_or(i64::MAX);
    Ok(vec![Change::Put(Record::Risk(RiskSignal {
        subject: risk_subject(report.subject_kind)?,
        id: Arc::from(id("subject_id", report.subject_id)?),
        kind: Arc::from(id("kind", report.kind)?),
        score,
        source: Arc::from(id("source", report.source)?),
        at: by.now,
        expires_at: by.now.saturating_add(ttl),
    }))])
}

pub fn clear_risk(
    snapshot: &Snapshot,
    subject_kind: &str,
    subject_id: &str,
    kind: &str,
    source: &str,
) -> Result<Vec<Change>, UpdateError> {
    let subject = risk_subject(subject_kind)?;
    let signal = snapshot
        .risk_signals()
        .find(|s| {
            s.subject == subject && &*s.id == subject_id && &*s.kind == kind && &*s.source == source
        })
        .ok_or_else(|| {
            UpdateError::NotFound(format!(
                "no {kind:?} signal from {source:?} about {subject_kind} {subject_id:?}"
            ))
        })?;
    Ok(vec![Change::Delete(Key::risk(signal))])
}
