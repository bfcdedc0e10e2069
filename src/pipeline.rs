//! The steps of one Check, in order, and nothing else:
//!
//! ```text
//! RequestView -> 1. the request's own shape: canonical target, limits, parsed path,
//!                   query and body, MCP read strictly     (request.*, mcp.*)
//!             -> 2. identity: token verification and binding (token.*, binding.*, dpop.*)
//!             -> 3. live context: revocations, the task, the session
//!                   (token.revoked, agent.revoked, ..., task.completed, session.paused)
//!             -> 4. policy: action classification, input document (+ input.leash),
//!                   evaluation, result shape -> Decision  (policy.*)
//!             -> 5. credential: on an allow the configuration or the policy
//!                   asks it for, a token minted for this call replaces the agent's
//!                   (mint.failed, mint.widening, mint.token_exposed)
//!             -> the headers leash vouches for, on an allow
//! ```
//!
//! The first failing step's code is the reason: a malformed MCP call without a token
//! is refused as `mcp.invalid_request`, not `token.missing`. The live context is read
//! after identity, from the snapshot serving when the Check arrives, so a revocation
//! holds on the very next Check even for a token found in the verified-token cache.
//! `check` never fails: every error becomes a denial with a reason code.

use std::sync::Arc;

use crate::action::{self, Action, ActionClass, Actions, Classifier, Resource, ToolCall};
use crate::config::RequestConfig;
use crate::context::{self, Established};
use crate::credential::{self, Invocation, MintError, Minter};
use crate::decision::{Decision, DenyReason, MintAsk, Permit, Vouched};
use crate::glob::RouteMatcher;
use crate::mcp::{self, Message};
use crate::policy::input::{self, InputError, Parsed};
use crate::policy::{EvalError, PolicyStore, Prepare, Prepared, Value, outcome};
use crate::request::{HeaderNotes, Target};
use crate::state::behaviour::{Behaviour, Counts, Observation};
use crate::state::{
    Approval, ApprovalStatus, Binding, Hold, Live, Party, PauseRequest, Reports, Sighting, State,
    Who,
};
use crate::token::{AuthFailure, Authenticator, Identity, MissingKey, TokenMode};
use crate::view::RequestView;

/// One Check's result, with what the decision log needs to explain it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    /// Unique per Check; Envoy's access log prints it from dynamic metadata.
    pub decision_id: String,
    /// The policy revision that decided, if one was serving.
    pub revision: Option<Arc<str>>,
    /// Who asked for what, as far as leash established it.
    pub facts: Facts,
    /// Why the policy asked for the session to be paused, if it did.
    pub pause: Option<String>,
    /// The approval this allow spends a use of; the Decider spends it, durably,
    /// before the answer leaves, and denies if it is gone.
    pub spends_approval: Option<Arc<str>>,
}

/// The signals behind a decision, for the decision log. Never a token or a secret:
/// the verified identity is kept only to read its claims when the log is written.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub identity: Option<Identity>,
    pub action: Option<ActionClass>,
    pub tool: Option<String>,
    /// The resource acted on.
    pub resource: Option<Resource>,
}

impl Facts {
    pub fn human(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|id| id.token.claims.human.as_deref())
    }

    pub fn agent(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|id| id.token.claims.agent.as_deref())
    }

    /// The task the tokens and the request agreed on.
    pub fn task(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|id| id.binding.task.as_deref())
    }
}

#[derive(Debug)]
pub struct Pipeline {
    policy: Arc<PolicyStore>,
    request: RequestConfig,
    auth: Arc<Authenticator>,
    unauthenticated: Vec<RouteMatcher>,
    mcp_routes: Vec<RouteMatcher>,
    state: Arc<State>,
    /// Where tasks and sessions seen for the first time, and pauses, are sent.
    reports: Option<Reports>,
    /// Counters per session, and the rules that pause one.
    behaviour: Option<Arc<Behaviour>>,
    /// Where an agent polls an approval, up to the id (the admin port's
    /// `/v1/approvals/`).
    approval_url: Option<String>,
    /// Mints the credentials that replace the agent's token upstream. Without one, a
    /// call that should get a credential is denied (mint.failed).
    minter: Option<Arc<Minter>>,
}

/// The call a credential would be minted for.
struct Call<'a> {
    view: &'a RequestView,
    target: &'a Target<'a>,
    action: &'a Action,
    /// The end of the approval the call spends, if it spends one.
    not_after: Option<i64>,
    /// Envoy sent only part of the body.
    truncated: bool,
    now: i64,
}

/// What step 1 established: the request leash decides on, read one way.
struct Shape<'a> {
    target: Target<'a>,
    notes: HeaderNotes,
    parsed: Parsed,
    mcp: Option<Message>,
    on_mcp_route: bool,
}

impl Pipeline {
    pub fn new(
        policy: Arc<PolicyStore>,
        request: RequestConfig,
        auth: Arc<Authenticator>,
        unauthenticated: Vec<RouteMatcher>,
        mcp_routes: Vec<RouteMatcher>,
    ) -> Self {
        Self {
            policy,
            request,
            auth,
            unauthenticated,
            mcp_routes,
            state: Arc::default(),
            reports: None,
            behaviour: None,
            approval_url: None,
            minter: None,
        }
    }

    /// Mints credentials with `minter` where the configuration or the policy asks.
    #[must_use]
    pub fn with_minter(mut self, minter: Arc<Minter>) -> Self {
        self.minter = Some(minter);
        self
    }

    /// Tells agents to poll approvals at `base` followed by the approval's id.
    #[must_use]
    pub fn with_approval_url(mut self, base: String) -> Self {
        self.approval_url = Some(base);
        self
    }

    /// Reads the live context from `state`, and reports what it lacks, and the pauses
    /// Checks call for, to `reports`.
    #[must_use]
    pub fn with_state(mut self, state: Arc<State>, reports: Reports) -> Self {
        self.state = state;
        self.reports = Some(reports);
        self
    }

    /// Reads the live context from `state` and reports nothing back: `leash check`,
    /// which decides as if that context were live and changes none.
    #[must_use]
    pub fn reading(mut self, state: Arc<State>) -> Self {
        self.state = state;
        self.reports = None;
        self
    }

    /// Counts each governed Check per session, and pauses a session when a rule fires.
    #[must_use]
    pub fn with_behaviour(mut self, behaviour: Arc<Behaviour>) -> Self {
        self.behaviour = Some(behaviour);
        self
    }

    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.policy
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    pub fn minter(&self) -> Option<&Arc<Minter>> {
        self.minter.as_ref()
    }

    /// Decides `view` at `now` (Unix seconds). The caller reads the clock: the edge
    /// reads the wall clock, tests any time they like. A token naming a key its issuer
    /// has not published yet is denied (`token.unknown_key`); [`try_check`](Self::try_check)
    /// lets the caller fetch keys and ask again instead.
    pub fn check(&self, view: &RequestView, now: i64) -> Verdict {
        self.try_check(view, now)
            .unwrap_or_else(|missing| unknown_key(&missing))
    }

    /// Decides `view` at `now`, or names the key to fetch before deciding. The
    /// decision counts in the session's behaviour, and a pause it calls for is sent.
    pub fn try_check(&self, view: &RequestView, now: i64) -> Result<Verdict, MissingKey> {
        let verdict = self.run(view, now, None)?;
        Ok(match self.after(view, &verdict, now) {
            // The Check that trips a rule is the first one the pause holds.
            Some(paused) => Verdict {
                decision: Decision::deny(DenyReason::SessionPaused, paused),
                spends_approval: None,
                ..verdict
            },
            None => verdict,
        })
    }

    /// What a decided Check leaves behind: its count in the session's behaviour, and
    /// the pause a rule or the policy calls for. Only for a request with an agent on a
    /// task: there is no session otherwise. Returns why a behaviour rule paused the
    /// session, if one did.
    fn after(&self, view: &RequestView, verdict: &Verdict, now: i64) -> Option<String> {
        let reports = self.reports.as_ref()?;
        let identity = verdict.facts.identity.as_ref()?;
        let agent = identity.token.claims.agent.as_ref()?;
        let task = identity.binding.task.as_ref()?;
        let fired = self.behaviour.as_ref().and_then(|behaviour| {
            behaviour.observe(&Observation {
                agent,
                task,
                class: verdict.facts.action.map(|c| c as usize),
                tool: verdict.facts.tool.as_deref(),
                denied: !verdict.decision.is_allow(),
                body_bytes: view.body.as_bytes().len() as u64,
                at: now,
                task_since: behaviour
                    .reads_task_age()
                    .then(|| self.state.snapshot().task(task).map(|t| t.first_seen))
                    .flatten(),
            })
        });
        let paused = fired.as_ref().map(|f| f.summary());
        let (rule, reason, pause_for) = match (fired, &verdict.pause) {
            (Some(fired), _) => (Some(fired.rule), fired.detail, fired.pause_for),
            (None, Some(reason)) => {
                // Held at once, as a rule's pause is: the Checks that arrive while the
                // pause is recorded are refused too.
                if let Some(behaviour) = &self.behaviour {
                    behaviour.hold(
                        agent,
                        task,
                        now,
                        &format!("the policy paused the session: {reason}"),
                    );
                }
                (None, reason.clone(), None)
            }
            (None, None) => return None,
        };
        let sent = reports.pauses.try_send(PauseRequest {
            agent: agent.clone(),
            task: task.clone(),
            rule,
            reason,
            pause_for,
            at: now,
        });
        if sent.is_err() {
            tracing::error!(%agent, %task, "a pause was called for but the updater is not taking more");
            // The rule may fire again on the next Check rather than wait out its window.
            if let Some(behaviour) = &self.behaviour {
                behaviour.rearm(agent, task);
            }
        }
        paused
    }

    /// Decides `view` as [`check`](Self::check) does, and returns the input document
    /// the policy evaluated (`None` when a hard denial came first): `leash check`.
    pub fn explain(&self, view: &RequestView, now: i64) -> (Verdict, Option<Value>) {
        let mut input = None;
        let verdict = self
            .run(view, now, Some(&mut input))
            .unwrap_or_else(|missing| unknown_key(&missing));
        (verdict, input)
    }

    /// The steps, in the order the README documents: the request's shape, identity,
    /// context, policy. What each step establishes is kept in the facts, so a denial
    /// at any later step records it: a token denial names the action it would have
    /// allowed, and every denial names the policy revision serving.
    fn run(
        &self,
        view: &RequestView,
        now: i64,
        keep_input: Option<&mut Option<Value>>,
    ) -> Result<Verdict, MissingKey> {
        // 1. The request's own shape.
        let shape = match shape(view, &self.request, &self.mcp_routes) {
            Ok(shape) => shape,
            Err((reason, detail)) => {
                return Ok(Verdict::new(
                    Decision::deny(reason, detail),
                    None,
                    Facts::default(),
                ));
            }
        };

        // What the request does, read with the serving set's action tables. Reading it
        // denies nothing: a set that is missing denies below, after identity.
        let serving = self.policy.current();
        let set = serving.as_ref();
        let revision = set.map(|s| s.info().revision.clone());
        let classified = set
            .and_then(|s| s.prepared::<Classifier>())
            .map(|classifier| classify(view, &shape, classifier));
        let mut facts = Facts {
            identity: None,
            action: classified.as_ref().map(|(action, _)| action.class),
            tool: classified
                .as_ref()
                .and_then(|(_, tool)| tool.as_ref().map(|t| t.name.clone())),
            resource: classified
                .as_ref()
                .map(|(action, _)| action.resource.clone()),
        };
        let deny =
            |decision: Decision, facts: Facts| Ok(Verdict::new(decision, revision.clone(), facts));

        // 2. Identity.
        let unauthenticated = self.auth.mode() == TokenMode::Off
            || self
                .unauthenticated
                .iter()
                .any(|route| route.matches(&shape.target, &view.method));
        if !unauthenticated {
            match self.auth.authenticate(view, &shape.target, now) {
                Ok(identity) => facts.identity = Some(identity),
                Err(AuthFailure::Denied(err)) => {
                    return deny(Decision::deny(err.reason(), err.to_string()), facts);
                }
                Err(AuthFailure::NeedKeys(missing)) => return Err(missing),
            }
        }

        // 3. Live context.
        let snapshot = self.state.snapshot();
        let live = match facts.identity.as_ref() {
            Some(identity) => {
                let primary = who(identity, &identity.token, view);
                // A transaction token beside it is revocable on its own terms too.
                let txn = identity.txn.as_deref().map(|t| who(identity, t, view));
                for w in std::iter::once(&primary).chain(&txn) {
                    if let Some((what, _)) = w.ungovernable() {
                        return deny(
                            Decision::deny(
                                DenyReason::TokenInvalid,
                                format!(
                                    "the token's {what} is empty, longer than {} bytes or holds a control character: no operator could revoke or pause it",
                                    crate::state::ops::MAX_ID_BYTES
                                ),
                            ),
                            facts,
                        );
                    }
                }
                if let Some(Err(hold)) = txn.as_ref().map(|t| snapshot.standing(t, now)) {
                    return deny(held(&hold), facts);
                }
                match snapshot.standing(&primary, now) {
                    Ok(live) => {
                        // A rule fired on this session and its pause is being recorded.
                        if let (Some(behaviour), Some(agent), Some(task)) =
                            (&self.behaviour, primary.agent, primary.task)
                            && let Some(why) = behaviour.held(agent, task, now)
                        {
                            return deny(
                                Decision::deny(DenyReason::SessionPaused, why.to_string()),
                                facts,
                            );
                        }
                        self.sight(&primary, &live, now);
                        Some(live)
                    }
                    Err(hold) => return deny(held(&hold), facts),
                }
            }
            None => None,
        };

        // 4. Policy.
        let Some(set) = set else {
            return deny(
                Decision::deny(
                    DenyReason::PolicyUnavailable,
                    "no policy set has loaded yet; the policy load errors are in the log",
                ),
                facts,
            );
        };
        let Some((action, tool)) = classified else {
            return deny(
                Decision::deny(
                    DenyReason::PolicyUnavailable,
                    "the serving policy set was loaded without its action tables",
                ),
                facts,
            );
        };
        let leash_headers = shape.notes.leash;
        // The approval asked for this very action, looked for only once any was asked.
        // A call whose body leash saw only in part cannot be bound: two calls alike in
        // their first bytes would share an approval.
        let whole_body = !shape.parsed.truncated;
        let binding_of = || {
            whole_body
                .then(|| {
                    action_binding(facts.identity.as_ref(), view, &shape.target, tool.as_ref())
                })
                .flatten()
        };
        let task = facts
            .identity
            .as_ref()
            .and_then(|i| i.binding.task.as_deref());
        let binding = match task {
            Some(task) if snapshot.approvals_on(task) => binding_of(),
            _ => None,
        };
        let approval = binding
            .as_ref()
            .and_then(|(_, digest)| snapshot.approval_for(digest));
        let reads_leash = set.info().reads_agent_context;
        let established = Established {
            view,
            target: &shape.target,
            identity: facts.identity.as_ref(),
            action: &action,
            tool: tool.as_ref(),
            mcp: shape.mcp.as_ref(),
            live: live.as_ref(),
            counters: None,
            approval,
            now,
        };
        // The shipped library alone is decided in Rust from the typed facts, with no
        // input document; `leash check` still shows the document it stands for.
        let native = set
            .library()
            .and_then(|lib| lib.decide(&context::library_input(&established)?));
        // The session's counters before this Check, only for a document that shows them:
        // the library in Rust does not read them.
        let counters = (reads_leash && (native.is_none() || keep_input.is_some()))
            .then(|| self.counters(facts.identity.as_ref(), now));
        let leash_doc = counters.map(|counters| {
            context::leash_document(&Established {
                counters: counters.as_ref(),
                ..established
            })
        });
        let result = match native {
            Some(result) => {
                if let Some(keep) = keep_input {
                    *keep = Some(shape.parsed.assemble(view, leash_doc));
                }
                Ok(result)
            }
            None => {
                let input = shape.parsed.assemble(view, leash_doc);
                if let Some(keep) = keep_input {
                    *keep = Some(input.clone());
                }
                set.evaluate_at(input, now)
            }
        };
        // leash's own fields beside the plugin's: a malformed one refuses the result.
        let asks = match &result {
            Ok(value) => outcome::requested_pause(value).and_then(|pause| {
                Ok((
                    pause,
                    outcome::requested_approval(value)?,
                    outcome::requested_mint(value)?,
                ))
            }),
            Err(_) => Ok((None, None, None)),
        };
        let (mut decision, pause, needs_approval, mint) = match asks {
            Ok((pause, approval, mint)) => (decision_of(result), pause, approval, mint),
            Err(err) => (
                Decision::deny(err.reason(), err.to_string()),
                None,
                None,
                None,
            ),
        };
        let mut spends = None;
        let binding = match needs_approval {
            Some(_) => binding.or_else(binding_of),
            None => binding,
        };
        match (&decision, needs_approval, binding) {
            // An allow on an approval spends one of its uses, durably, before the
            // answer leaves (the Decider waits for it).
            (Decision::Allow(_), _, _) => {
                spends = approval.filter(|a| a.usable(now)).map(|a| a.id.clone());
            }
            (Decision::Deny(_), Some(reason), Some((binding, digest))) => {
                decision = self.ask_approval(&snapshot, approval, binding, digest, reason, now);
            }
            _ => {}
        }
        if let Decision::Allow(permit) = &mut decision {
            let client = leash_headers.then(|| view.headers.keys().map(String::as_str));
            permit.vouch(
                vouched(facts.identity.as_ref()),
                client.into_iter().flatten(),
            );
            // 5. Credential.
            let not_after = spends.as_ref().and_then(|_| approval.map(|a| a.expires_at));
            let call = Call {
                view,
                target: &shape.target,
                action: &action,
                not_after,
                truncated: !whole_body,
                now,
            };
            if let Err((reason, why)) =
                self.mint(permit, facts.identity.as_ref(), &call, mint.as_ref())
            {
                decision = Decision::deny(reason, why);
                spends = None;
            }
        }
        let mut verdict = Verdict::new(decision, revision, facts);
        verdict.pause = pause;
        verdict.spends_approval = spends;
        Ok(verdict)
    }

    /// Replaces the agent's credentials on the upstream request with one minted for
    /// `call`, where the configuration or the policy (`ask`) wants one. A denial when
    /// none can be minted: the agent's token is never sent instead.
    fn mint(
        &self,
        permit: &mut Permit,
        identity: Option<&crate::token::Identity>,
        call: &Call<'_>,
        ask: Option<&MintAsk>,
    ) -> Result<(), (DenyReason, String)> {
        let rule = self
            .minter
            .as_ref()
            .and_then(|m| m.rule_for(&call.action.resource));
        if rule.is_none() && ask.is_none() {
            return Ok(());
        }
        let Some(minter) = &self.minter else {
            return Err((
                DenyReason::MintFailed,
                "the policy asks for a minted credential, and this pipeline has no signing key"
                    .into(),
            ));
        };
        let Some(identity) = identity else {
            return Err((DenyReason::MintFailed, "a minted credential is asked for a call with no verified token (an unauthenticated route)".into(),
            ));
        };
        let claims = &identity.token.claims;
        let Some(agent) = claims.agent.as_deref() else {
            return Err((
                DenyReason::MintFailed,
                "the verified token names no agent to mint a credential for".into(),
            ));
        };
        if call.truncated {
            return Err((
                DenyReason::MintTokenExposed,
                "Envoy sent only part of the body: leash cannot tell whether the agent's token is in the rest, which would reach the tool".into(),
            ));
        }
        let settings = minter.settings();
        let replaced: Vec<&str> = std::iter::once(settings.header.as_ref())
            .chain(settings.remove.iter().map(String::as_str))
            .collect();
        if let Some(exposure) = credential::exposed(call.view, &call.target.path, &replaced) {
            return Err((DenyReason::MintTokenExposed, exposure.to_string()));
        }
        // The agent writes Host; Envoy's route name for the upstream it cannot choose.
        let audience = match (&call.view.route_resource, call.target.port) {
            (Some(route), _) => route.to_string(),
            (None, Some(port)) => format!("{}:{port}", call.target.host),
            (None, None) => call.target.host.to_string(),
        };
        let ends = [
            claims.exp,
            identity.txn.as_ref().and_then(|t| t.claims.exp),
            call.not_after,
        ];
        let invocation = Invocation {
            human: claims.human.as_deref(),
            agent,
            chain: &claims.chain,
            task: identity.binding.task.as_deref(),
            resource: &call.action.resource,
            class: call.action.class,
            audience: &audience,
            not_after: ends.into_iter().flatten().min(),
            now: call.now,
        };
        match minter.mint(&invocation, rule, ask) {
            Ok(credential) => permit
                .carry(credential)
                .map_err(|why| (DenyReason::PolicyInvalidResult, why)),
            Err(MintError::Widening(why)) => Err((DenyReason::MintWidening, why)),
            Err(MintError::Failed(why)) => Err((DenyReason::MintFailed, why)),
        }
    }

    /// The denial that asks for an approval of this very action: the pending one
    /// already asked for, or a new one recorded now (without waiting for the disk: the
    /// agent polls its status).
    fn ask_approval(
        &self,
        snapshot: &crate::state::Snapshot,
        asked: Option<&Approval>,
        binding: Binding,
        digest: String,
        reason: String,
        now: i64,
    ) -> Decision {
        use crate::state::ops;
        // A refusal stands for the time an approver had to decide: asking again at
        // once is not a way to wear an approver down.
        if let Some(denied) = asked.filter(|a| {
            a.status == ApprovalStatus::Denied && now < a.requested_at + ops::APPROVAL_WAIT
        }) {
            return Decision::deny(
                DenyReason::ApprovalRequired,
                format!(
                    "approval {} for this very action was denied by {}: it can be asked again from {}",
                    denied.id,
                    denied.decided_by.as_deref().unwrap_or("an approver"),
                    denied.requested_at + ops::APPROVAL_WAIT
                ),
            );
        }
        let approval = match asked.filter(|a| a.waiting(now)) {
            Some(waiting) => waiting.clone(),
            None => {
                if let Err(why) = ops::room_for_approval(snapshot, &binding, now) {
                    return Decision::deny(
                        DenyReason::ApprovalRequired,
                        format!("{reason} ({why})"),
                    );
                }
                let approval = Approval {
                    id: Arc::from(Binding::request_id(&digest, asked.map(|a| &*a.id))),
                    digest: Arc::from(digest),
                    binding,
                    reason: reason.clone(),
                    status: ApprovalStatus::Pending,
                    requested_at: now,
                    expires_at: now + crate::state::ops::APPROVAL_WAIT,
                    uses_left: 0,
                    decided_by: None,
                    decided_reason: None,
                };
                let sent = self
                    .reports
                    .as_ref()
                    .is_some_and(|r| r.approvals.try_send(approval.clone()).is_ok());
                if !sent {
                    return Decision::deny(
                        DenyReason::ApprovalRequired,
                        format!("{reason} (the approval could not be recorded: try again)"),
                    );
                }
                approval
            }
        };
        let status_url = format!(
            "{}{}",
            self.approval_url.as_deref().unwrap_or("/v1/approvals/"),
            approval.id
        );
        let body = serde_json::json!({
            "error": "approval_required",
            "reason": reason,
            "approval": {
                "id": &*approval.id,
                "status_url": status_url,
                "expires_at": approval.expires_at,
            },
        });
        Decision::deny_with(
            DenyReason::ApprovalRequired,
            crate::decision::DenyResponse {
                status: crate::decision::HttpStatus::FORBIDDEN,
                headers: vec![
                    crate::decision::Header {
                        name: "content-type".into(),
                        value: "application/json".into(),
                    },
                    crate::decision::Header {
                        name: "retry-after".into(),
                        value: "10".into(),
                    },
                ],
                body: body.to_string(),
            },
            format!(
                "approval {} asked for {}: {reason}",
                approval.id, approval.binding.action
            ),
        )
    }

    /// The counters of the session `identity` works in, when it names an agent and a
    /// task and leash keeps counters.
    fn counters(&self, identity: Option<&Identity>, now: i64) -> Option<Counts> {
        let identity = identity?;
        let agent = identity.token.claims.agent.as_deref()?;
        let task = identity.binding.task.as_deref()?;
        Some(self.behaviour.as_ref()?.counts(agent, task, now))
    }

    /// Sends what this Check saw and the state has not recorded: its task, the agent
    /// on it, the session. Never waits: when the updater is behind, a later Check
    /// sends it again.
    fn sight(&self, who: &Who<'_>, live: &Live<'_>, now: i64) {
        let (Some(reports), Some(task)) = (&self.reports, who.task) else {
            return;
        };
        // A new agent on a known task brings a new session: one test covers both.
        let known = live.task.is_some() && (who.agent.is_none() || live.session.is_some());
        if !known {
            let _ = reports.sightings.try_send(Sighting {
                task: Arc::from(task),
                human: who.human.map(Arc::from),
                agent: who.agent.map(Arc::from),
                at: now,
            });
        }
    }

    /// Evaluates an input document as given with the serving policy set.
    pub fn decide(&self, input: Value) -> Verdict {
        let serving = self.policy.current();
        match serving.as_ref() {
            Some(set) => Verdict::new(
                decision_of(set.evaluate(input)),
                Some(set.info().revision.clone()),
                Facts::default(),
            ),
            None => Verdict::new(
                Decision::deny(
                    DenyReason::PolicyUnavailable,
                    "no policy set has loaded yet",
                ),
                None,
                Facts::default(),
            ),
        }
    }
}

/// Why step 1 refused a request: its reason code and what was wrong.
type Refusal = (DenyReason, String);

/// Step 1: the canonical target and the limits, the parsed path, query and body, and
/// the MCP message read strictly.
fn shape<'a>(
    view: &'a RequestView,
    request: &RequestConfig,
    mcp_routes: &[RouteMatcher],
) -> Result<Shape<'a>, Refusal> {
    let (target, notes) =
        Target::read(view, &request.target).map_err(|err| (err.reason(), err.to_string()))?;
    let parsed =
        input::parse(view, &request.body).map_err(|err| (input_reason(&err), err.to_string()))?;
    let on_route = mcp_routes.iter().any(|r| r.matches_location(&target));
    let body = mcp::Body {
        parsed: &parsed.body,
        truncated: parsed.truncated,
    };
    let mcp =
        mcp::read(view, body, on_route, notes).map_err(|err| (err.reason(), err.to_string()))?;
    Ok(Shape {
        target,
        notes,
        parsed,
        mcp,
        on_mcp_route: on_route,
    })
}

fn classify(
    view: &RequestView,
    shape: &Shape<'_>,
    classifier: &Classifier,
) -> (Action, Option<ToolCall>) {
    classifier.classify(&action::Request {
        view,
        target: &shape.target,
        body: &shape.parsed.body,
        truncated: shape.parsed.truncated,
        mcp: shape.mcp.as_ref(),
        on_mcp_route: shape.on_mcp_route,
        notes: shape.notes,
    })
}

/// Exactly what an approval of this request would allow, and its digest: this agent
/// of this issuer on this task, and the tool call with its arguments on this server,
/// or the method on the whole URL (query as sent) with its body. `None` without an
/// agent and a task, or for tool arguments leash cannot hash as the tool reads them.
/// The caller makes sure leash saw the whole body.
fn action_binding(
    identity: Option<&Identity>,
    view: &RequestView,
    target: &Target<'_>,
    tool: Option<&ToolCall>,
) -> Option<(Binding, String)> {
    let party = Party {
        issuer: &identity?.token.issuer.config.issuer,
        task: identity?.binding.task.as_deref()?,
        agent: identity?.token.claims.agent.as_deref()?,
        human: identity?.token.claims.human.as_deref(),
    };
    let port = target.port.map_or(String::new(), |p| format!(":{p}"));
    let server = format!("{}://{}{port}{}", target.scheme, target.host, target.path);
    let binding = match tool {
        Some(call) => {
            if !exact(&call.arguments) {
                return None;
            }
            Binding::tool(
                party,
                &call.name,
                &server,
                &serde_json::to_string(&call.arguments).ok()?,
            )
        }
        None => {
            let query = view.path.split_once('?').map_or("", |(_, q)| q);
            let url = if query.is_empty() {
                server
            } else {
                format!("{server}?{query}")
            };
            Binding::http(party, &view.method, &url, view.body.as_bytes())
        }
    };
    let digest = binding.digest();
    Some((binding, digest))
}

/// Whether every number in `value` is an integer JSON carries exactly (|n| < 2^53):
/// leash reads numbers into 64 bits, so two calls differing past that precision
/// would hash alike while a tool tells them apart.
fn exact(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_integer() && n.as_i64().is_some_and(|i| i.unsigned_abs() < (1 << 53))
        }
        Value::Array(items) => items.iter().all(exact),
        Value::Set(items) => items.iter().all(exact),
        Value::Object(map) => map.iter().all(|(k, v)| exact(k) && exact(v)),
        _ => true,
    }
}

/// Who `token` (the request's access token or the transaction token beside it) speaks
/// for, as the live context reads it.
fn who<'a>(
    identity: &'a Identity,
    token: &'a crate::token::VerifiedToken,
    view: &'a RequestView,
) -> Who<'a> {
    let claims = &token.claims;
    Who {
        issuer: &token.issuer.config.issuer,
        jti: claims.jti.as_deref(),
        iat: claims.iat,
        subject: claims.subject.as_deref(),
        agent: claims.agent.as_deref(),
        actors: &claims.chain,
        human: claims.human.as_deref(),
        workload: workload_of(token, view),
        task: identity.binding.task.as_deref(),
    }
}

/// The workload a request comes from, as the live context names it: the peer's
/// certificate identity, else the token's workload claim.
pub fn workload_of<'a>(
    token: &'a crate::token::VerifiedToken,
    view: &'a RequestView,
) -> Option<&'a str> {
    Some(view.source_principal.as_str())
        .filter(|p| !p.is_empty())
        .or(token.claims.workload.as_deref())
}

/// The denial for what the live context holds against a request.
fn held(hold: &Hold<'_>) -> Decision {
    use crate::state::{SubjectKind, TaskStatus};
    match hold {
        Hold::TokenRevoked(rev) => Decision::deny(
            DenyReason::TokenRevoked,
            format!("the token was revoked by {} ({})", rev.by, rev.reason),
        ),
        Hold::SubjectRevoked(rev) => Decision::deny(
            match rev.kind {
                SubjectKind::Agent => DenyReason::AgentRevoked,
                SubjectKind::Human => DenyReason::HumanRevoked,
                SubjectKind::Workload => DenyReason::WorkloadRevoked,
                SubjectKind::Subject => DenyReason::SubjectRevoked,
            },
            format!(
                "{} {:?} was revoked for tokens issued at or before {} by {} ({})",
                rev.kind.name(),
                rev.id,
                rev.after,
                rev.by,
                rev.reason
            ),
        ),
        Hold::TaskEnded(task) => Decision::deny(
            if task.status == TaskStatus::Revoked {
                DenyReason::TaskRevoked
            } else {
                DenyReason::TaskCompleted
            },
            format!(
                "task {:?} is {} since {} ({})",
                task.id,
                task.status.name(),
                task.ended.unwrap_or_default(),
                task.end_reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        Hold::SessionPaused(session) => {
            let pause = session.pause.as_ref();
            Decision::deny(
                DenyReason::SessionPaused,
                format!(
                    "the session of agent {:?} on task {:?} is paused by {}: {}",
                    session.agent,
                    session.task,
                    pause.map_or("?", |p| p.by.as_str()),
                    pause.map_or("", |p| p.reason.as_str())
                ),
            )
        }
    }
}

/// Who acts, from the verified identity, for `x-leash-agent`, `x-leash-human` and
/// `x-leash-task`.
fn vouched(identity: Option<&Identity>) -> Vouched {
    identity.map_or_else(Vouched::default, |id| Vouched {
        agent: id.token.claims.agent.clone(),
        human: id.token.claims.human.clone(),
        task: id.binding.task.clone(),
    })
}

/// The hook that compiles `data.leash.actions` with the configured actions when a
/// policy set loads: a Check finds its classifier ready, or the set is rejected.
pub fn classifier_hook(config: Actions) -> Prepare {
    Prepare(Arc::new(move |data| {
        let from_data = action::from_data(data)?;
        Ok(Arc::new(Classifier::new(&config, from_data.as_ref())) as Prepared)
    }))
}

/// The input documents `view` gets with no token and only the configured actions, as
/// the first Check of a task sees it and with every part of `input.leash.context`
/// filled: what a candidate policy set is warmed with before it may serve, so a rule
/// that fails only once a task is live is refused at load.
pub fn warmup_input(
    view: &RequestView,
    request: &RequestConfig,
    mcp_routes: &[RouteMatcher],
    actions: &Actions,
) -> Option<(Value, Value)> {
    let shape = shape(view, request, mcp_routes).ok()?;
    let classifier = Classifier::new(actions, None);
    let (action, tool) = classify(view, &shape, &classifier);
    let sample = SampleContext::new();
    let live = sample.live();
    let input = |live: Option<&Live<'_>>| {
        let leash = context::leash_document(&Established {
            view,
            target: &shape.target,
            identity: None,
            action: &action,
            tool: tool.as_ref(),
            mcp: shape.mcp.as_ref(),
            live,
            counters: live.map(|_| &sample.counters),
            approval: live.map(|_| &sample.approval),
            now: SampleContext::NOW,
        });
        shape.parsed.clone().assemble(view, Some(leash))
    };
    Some((input(None), input(Some(&live))))
}

/// A live context with every part present, for warm-up: an active task and its
/// session, a live signal about each kind of subject, counts, an approval.
struct SampleContext {
    task: crate::state::Task,
    session: crate::state::Session,
    risk: [Arc<[crate::state::RiskSignal]>; 4],
    counters: Counts,
    approval: Approval,
}

impl SampleContext {
    /// A plausible moment (2026-01-01), so that a policy doing time arithmetic on the
    /// context meets the magnitudes it meets live.
    const NOW: i64 = 1_767_225_600;

    fn new() -> Self {
        use crate::state::{RiskSignal, RiskSubject, Session, Task, TaskStatus};
        let name: Arc<str> = Arc::from("warmup");
        let task = Task {
            id: name.clone(),
            human: Some(name.clone()),
            agents: vec![name.clone()],
            status: TaskStatus::Active,
            first_seen: Self::NOW - 60,
            ended: None,
            ended_by: None,
            end_reason: None,
        };
        let session = Session {
            agent: name.clone(),
            task: name.clone(),
            first_seen: Self::NOW - 60,
            pause: None,
        };
        let risk = RiskSubject::ALL.map(|subject| {
            Arc::from([RiskSignal {
                subject,
                id: name.clone(),
                kind: name.clone(),
                score: 10,
                source: name.clone(),
                at: Self::NOW - 60,
                expires_at: Self::NOW + 3600,
            }])
        });
        let binding = Binding {
            issuer: name.clone(),
            task: name.clone(),
            agent: name.clone(),
            human: None,
            action: "GET https://warmup/".into(),
            arguments: None,
        };
        let approval = Approval {
            id: name.clone(),
            digest: Arc::from(binding.digest()),
            binding,
            reason: String::new(),
            status: ApprovalStatus::Approved,
            requested_at: Self::NOW - 60,
            expires_at: Self::NOW + 600,
            uses_left: 1,
            decided_by: None,
            decided_reason: None,
        };
        Self {
            task,
            session,
            risk,
            counters: Counts {
                window: 60,
                calls: [1, 1, 1],
                denials: 1,
                body_bytes: 1,
                tools: 1,
            },
            approval,
        }
    }

    fn live(&self) -> Live<'_> {
        Live {
            task: Some(&self.task),
            session: Some(&self.session),
            risk: self.risk.each_ref().map(|s| Some(&**s)),
        }
    }
}

fn decision_of(result: Result<Value, EvalError>) -> Decision {
    match result {
        Err(err @ EvalError::Limit(_)) => {
            Decision::deny(DenyReason::PolicyLimitExceeded, err.to_string())
        }
        Err(err @ EvalError::Failed(_)) => Decision::deny(DenyReason::PolicyError, err.to_string()),
        Ok(result) => match outcome::read(&result) {
            Ok(answer) => Decision::from_policy(answer),
            Err(err) => Decision::deny(err.reason(), err.to_string()),
        },
    }
}

impl Verdict {
    pub fn new(decision: Decision, revision: Option<Arc<str>>, facts: Facts) -> Self {
        Self {
            decision,
            decision_id: uuid::Uuid::new_v4().to_string(),
            revision,
            facts,
            pause: None,
            spends_approval: None,
        }
    }
}

fn unknown_key(missing: &MissingKey) -> Verdict {
    let err = missing.denial();
    Verdict::new(
        Decision::deny(err.reason(), err.to_string()),
        None,
        Facts::default(),
    )
}

fn input_reason(err: &InputError) -> DenyReason {
    match err {
        InputError::InvalidPath(_) => DenyReason::RequestInvalidPath,
        InputError::BodyTooLarge { .. } => DenyReason::RequestBodyTooLarge,
        InputError::BodyTooDeep { .. } => DenyReason::RequestBodyTooDeep,
    }
}
