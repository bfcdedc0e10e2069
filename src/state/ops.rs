//! The operator's changes to the live context, as pure functions of the snapshot
//! serving: each checks its arguments and returns the records to write. Front ends
//! (the control API, later SSF/CAEP receivers) only convert in and out.

use std::sync::Arc;

use super::{
    Approval, ApprovalStatus, Change, Key, Pause, Record, RiskSignal, RiskSubject, Session,
    Snapshot, SubjectKind, SubjectRevocation, TaskStatus, TokenRevocation, UpdateError,
};

/// Who asks, and when (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub caller: &'a str,
    pub now: i64,
}

/// The longest id the state keeps.
pub const MAX_ID_BYTES: usize = 512;

/// Ids become store keys and log fields: bounded, and free of control characters
/// (U+001F joins a key's parts).
pub fn valid_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_ID_BYTES && !has_control(value)
}

/// Whether `value` holds a control character (`char::is_control`: C0, DEL and C1).
/// Every Check tests each id it names, so the common case is one branch-free pass the
/// compiler vectorises; only a name holding U+0080 to U+00BF (lead byte 0xC2) is walked.
fn has_control(value: &str) -> bool {
    let bytes = value.as_bytes();
    let suspect = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    });
    // C1 controls, U+0080 to U+009F, are 0xC2 0x80..=0x9F in UTF-8.
    suspect
        && bytes.iter().enumerate().any(|(i, &b)| {
            b < 0x20
                || b == 0x7f
                || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
        })
}

fn id<'a>(what: &str, value: &'a str) -> Result<&'a str, UpdateError> {
    if value.is_empty() {
        return Err(UpdateError::Invalid(format!("{what} is required")));
    }
    if !valid_id(value) {
        return Err(UpdateError::Invalid(format!(
            "{what} must be at most 512 bytes without control characters"
        )));
    }
    Ok(value)
}

/// The longest reason a change keeps.
pub const MAX_REASON_BYTES: usize = 1024;

fn reason(value: &str) -> Result<String, UpdateError> {
    if value.len() > MAX_REASON_BYTES {
        return Err(UpdateError::Invalid(format!(
            "reason is longer than {MAX_REASON_BYTES} bytes"
        )));
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

/// What the trusted issuers allow, for revocations to be exact and last long enough.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The `iss` of every trusted issuer, spelled as tokens carry it.
    pub issuers: &'a [String],
    /// The longest any trusted token can stay valid, seconds.
    pub longest: i64,
    /// The largest clock leeway any issuer is given, seconds.
    pub leeway: i64,
}

impl Trust<'_> {
    /// `issuer` if it is trusted: a revocation for an issuer spelled otherwise than
    /// tokens spell it would never hold.
    fn issuer<'i>(&self, issuer: &'i str) -> Result<&'i str, UpdateError> {
        let issuer = id("issuer", issuer)?;
        if self.issuers.iter().any(|i| i == issuer) {
            return Ok(issuer);
        }
        Err(UpdateError::Invalid(format!(
            "issuer {issuer:?} is not a trusted issuer; tokens.issuers lists {:?}",
            self.issuers
        )))
    }
}

pub fn revoke_token(
    snapshot: &Snapshot,
    issuer: &str,
    jti: &str,
    expires_at: i64,
    why: &str,
    trust: Trust<'_>,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let issuer = trust.issuer(issuer)?;
    let jti = id("jti", jti)?;
    // Kept until no token with this id can be valid: past its `exp` (or from now, for
    // an `exp` already gone or not given) by the longest lifetime and leeway.
    let mut until = expires_at.max(by.now).saturating_add(trust.longest);
    if let Some(existing) = snapshot.token_revocation(issuer, jti) {
        until = until.max(existing.until);
    }
    Ok(vec![Change::Put(Record::Token(TokenRevocation {
        issuer: Arc::from(issuer),
        jti: Arc::from(jti),
        until,
        at: by.now,
        by: by.caller.to_owned(),
        reason: reason(why)?,
    }))])
}

/// A subject to revoke, as the operator names it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// agent, human, workload or subject.
    pub kind: &'a str,
    pub id: &'a str,
    /// For kind subject only: whose `sub`.
    pub issuer: &'a str,
    /// Unix seconds; 0 for now (plus the leeway).
    pub after: i64,
}

pub fn revoke_subject(
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    why: &str,
    trust: Trust<'_>,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let Subject {
        kind,
        id: subject,
        issuer,
        after,
    } = *subject;
    let kind = SubjectKind::parse(kind).ok_or_else(|| {
        UpdateError::Invalid(format!(
            "kind {kind:?}: use agent, human, workload or subject"
        ))
    })?;
    let issuer = match (kind, issuer.is_empty()) {
        (SubjectKind::Subject, _) => Some(Arc::from(trust.issuer(issuer)?)),
        (_, true) => None,
        (_, false) => {
            return Err(UpdateError::Invalid(format!(
                "an issuer names whose `sub` a subject revocation means; a {} revocation holds for every issuer",
                kind.name()
            )));
        }
    };
    let subject = id("id", subject)?;
    // Now, by default, plus the leeway a token's `iat` may run ahead: a token minted
    // just before the revocation by a fast clock is refused too.
    let mut after = if after > 0 {
        after
    } else {
        by.now.saturating_add(trust.leeway)
    };
    // A second revocation never reopens what the first closed.
    if let Some(existing) = snapshot.subject_revocation(kind, issuer.as_deref(), subject) {
        after = after.max(existing.after);
    }
    Ok(vec![Change::Put(Record::Subject(SubjectRevocation {
        kind,
        id: Arc::from(subject),
        issuer,
        after,
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
    let mut until = (ttl > 0).then(|| by.now.saturating_add(ttl));
    // A second pause never shortens the one holding: "until resumed" outlasts a
    // deadline, and a later deadline a sooner one.
    if let Some(held) = session.paused(by.now) {
        until = match (held.until, until) {
            (None, _) | (_, None) => None,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    session.pause = Some(Pause {
        reason: reason(why)?,
        by: by.caller.to_owned(),
        at: by.now,
        until,
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

/// How long an approver may take, and how long an approval may last at most.
pub const APPROVAL_WAIT: i64 = 15 * 60;
pub const MAX_APPROVAL_LIFETIME: i64 = 24 * 3600;
pub const MAX_APPROVAL_USES: u32 = 100;

/// How many approvals may wait at once: per agent and task, and in all.
pub const MAX_WAITING_PER_SESSION: usize = 16;
pub const MAX_WAITING: usize = 10_000;

/// Whether another approval may wait beside those that do: an agent cannot bury its
/// approvers (or the store) in requests by varying its calls.
pub fn room_for_approval(
    snapshot: &Snapshot,
    binding: &super::Binding,
    now: i64,
) -> Result<(), String> {
    let (mut mine, mut all) = (0, 0);
    for waiting in snapshot.approvals().filter(|a| a.waiting(now)) {
        all += 1;
        let b = &waiting.binding;
        if (&b.issuer, &b.agent, &b.task) == (&binding.issuer, &binding.agent, &binding.task) {
            mine += 1;
        }
    }
    if mine >= MAX_WAITING_PER_SESSION {
        return Err(format!(
            "{mine} approvals of this agent on this task already wait for an approver"
        ));
    }
    if all >= MAX_WAITING {
        return Err(format!("{all} approvals already wait for approvers"));
    }
    Ok(())
}

/// Records `approval` as pending, unless one for the same action still waits or there
/// is no room for another.
pub fn request_approval(snapshot: &Snapshot, approval: Approval) -> Vec<Change> {
    match snapshot.approval_for(&approval.digest) {
        Some(existing) if existing.waiting(approval.requested_at) => Vec::new(),
        _ if room_for_approval(snapshot, &approval.binding, approval.requested_at).is_err() => {
            Vec::new()
        }
        _ => vec![Change::Put(Record::Approval(Box::new(approval)))],
    }
}

fn pending<'s>(snapshot: &'s Snapshot, id: &str, now: i64) -> Result<&'s Approval, UpdateError> {
    let approval = snapshot
        .approval(id)
        .ok_or_else(|| UpdateError::NotFound(format!("no approval {id:?}")))?;
    if !approval.waiting(now) {
        return Err(UpdateError::Invalid(format!(
            "approval {id:?} is {} and can no longer be decided",
            if approval.status == ApprovalStatus::Pending {
                "expired"
            } else {
                approval.status.name()
            }
        )));
    }
    Ok(approval)
}

/// An approver allows the approval's action `uses` times (0 means once) until
/// `until` (Unix seconds; 0 means ten minutes from now).
pub fn approve(
    snapshot: &Snapshot,
    id: &str,
    uses: u32,
    until: i64,
    why: &str,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let mut approval = pending(snapshot, id, by.now)?.clone();
    let until = if until > 0 { until } else { by.now + 600 };
    if until <= by.now || until > by.now + MAX_APPROVAL_LIFETIME {
        return Err(UpdateError::Invalid(format!(
            "approved_until must be in the next {} hours",
            MAX_APPROVAL_LIFETIME / 3600
        )));
    }
    if uses > MAX_APPROVAL_USES {
        return Err(UpdateError::Invalid(format!(
            "uses must be at most {MAX_APPROVAL_USES}"
        )));
    }
    approval.status = ApprovalStatus::Approved;
    approval.uses_left = uses.max(1);
    approval.expires_at = until;
    approval.decided_by = Some(by.caller.to_owned());
    approval.decided_reason = Some(reason(why)?);
    Ok(vec![Change::Put(Record::Approval(Box::new(approval)))])
}

/// Refuses a pending approval, or withdraws an approved one that still has uses.
pub fn deny_approval(
    snapshot: &Snapshot,
    id: &str,
    why: &str,
    by: By<'_>,
) -> Result<Vec<Change>, UpdateError> {
    let mut approval = match snapshot.approval(id) {
        Some(a) if a.usable(by.now) => a.clone(),
        _ => pending(snapshot, id, by.now)?.clone(),
    };
    approval.status = ApprovalStatus::Denied;
    approval.uses_left = 0;
    approval.decided_by = Some(by.caller.to_owned());
    approval.decided_reason = Some(reason(why)?);
    Ok(vec![Change::Put(Record::Approval(Box::new(approval)))])
}

/// The approval after one use at `now`, or why it cannot be used.
pub fn spend(approval: &Approval, now: i64) -> Result<Approval, UpdateError> {
    if !approval.usable(now) {
        return Err(UpdateError::Invalid(format!(
            "approval {:?} is {} and allows nothing now",
            approval.id,
            approval.status.name()
        )));
    }
    let mut spent = approval.clone();
    spent.uses_left -= 1;
    if spent.uses_left == 0 {
        spent.status = ApprovalStatus::Used;
    }
    Ok(spent)
}
