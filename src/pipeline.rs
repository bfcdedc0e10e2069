//! The steps of one Check, in order, and nothing else:
//!
//! ```text
//! RequestView -> parsed path, query, body
//!             -> token verification and binding   (hard denials: token.*, binding.*, dpop.*)
//!             -> action classification             (mcp.header_mismatch)
//!             -> input document (+ input.leash)
//!             -> policy evaluation -> result shape -> Decision
//! ```
//!
//! Live context (task state, session, risk) will slot in beside token verification.
//! `check` never fails: every error becomes a denial with a reason code.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::action::{self, ActionsConfig, Classifier};
use crate::config::RouteMatch;
use crate::context;
use crate::decision::{Decision, DenyReason};
use crate::policy::input::{self, InputError, InputLimits};
use crate::policy::{EvalError, PolicySet, PolicyStore, Value, outcome};
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
}

/// The signals behind a decision, for the decision log. Never a token or a secret:
/// the verified identity is kept only to read its claims when the log is written.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub identity: Option<Identity>,
    pub action: Option<&'static str>,
    pub tool: Option<String>,
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

/// A classifier and the policy revision whose data it was built from.
type RevisionClassifier = (Arc<str>, Classifier);

#[derive(Debug)]
pub struct Pipeline {
    policy: Arc<PolicyStore>,
    limits: InputLimits,
    auth: Arc<Authenticator>,
    unauthenticated: Vec<RouteMatch>,
    actions: ActionsConfig,
    /// The classifier for the serving revision (its `data.leash.actions` included).
    classifier: ArcSwapOption<RevisionClassifier>,
}

impl Pipeline {
    pub fn new(
        policy: Arc<PolicyStore>,
        limits: InputLimits,
        auth: Arc<Authenticator>,
        unauthenticated: Vec<RouteMatch>,
        actions: ActionsConfig,
    ) -> Self {
        Self {
            policy,
            limits,
            auth,
            unauthenticated,
            actions,
            classifier: ArcSwapOption::empty(),
        }
    }

    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.policy
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Decides `view` now. A token naming a key its issuer has not published yet is
    /// denied (`token.unknown_key`); [`try_check`](Self::try_check) lets the caller
    /// fetch keys and ask again instead.
    pub fn check(&self, view: &RequestView) -> Verdict {
        self.try_check(view)
            .unwrap_or_else(|missing| unknown_key(&missing))
    }

    /// Decides `view`, or names the key to fetch before deciding.
    pub fn try_check(&self, view: &RequestView) -> Result<Verdict, MissingKey> {
        self.run(view, None)
    }

    /// Decides `view` as [`check`](Self::check) does, and returns the input document
    /// the policy evaluated (`None` when a hard denial came first): `leash check`.
    pub fn explain(&self, view: &RequestView) -> (Verdict, Option<Value>) {
        let mut input = None;
        let verdict = self
            .run(view, Some(&mut input))
            .unwrap_or_else(|missing| unknown_key(&missing));
        (verdict, input)
    }

    fn run(
        &self,
        view: &RequestView,
        keep_input: Option<&mut Option<Value>>,
    ) -> Result<Verdict, MissingKey> {
        let deny = |reason: DenyReason, detail: String| {
            Ok(Verdict::new(
                Decision::deny(reason, detail),
                None,
                Facts::default(),
            ))
        };
        let parsed = match input::parse(view, &self.limits) {
            Ok(parsed) => parsed,
            Err(err) => return deny(input_reason(&err), err.to_string()),
        };

        let identity = if self.auth.mode() == TokenMode::Off
            || self
                .unauthenticated
                .iter()
                .any(|r| r.route().matches(&view.host, &view.path, &view.method))
        {
            None
        } else {
            match self.auth.authenticate(view) {
                Ok(identity) => Some(identity),
                Err(AuthFailure::Denied(err)) => return deny(err.reason(), err.to_string()),
                Err(AuthFailure::NeedKeys(missing)) => return Err(missing),
            }
        };

        let serving = self.policy.current();
        let Some(set) = serving.as_ref() else {
            return deny(
                DenyReason::PolicyUnavailable,
                "no policy set has loaded yet; the policy load errors are in the log".into(),
            );
        };
        let (action, tool) = match self.classifier_for(set).1.classify(view, &parsed.body) {
            Ok(classified) => classified,
            Err(err) => return deny(DenyReason::McpHeaderMismatch, err.to_string()),
        };
        let leash = set
            .info()
            .reads_agent_context
            .then(|| context::leash_document(view, identity.as_ref(), &action, tool.as_ref()));
        let facts = Facts {
            identity,
            action: Some(action.class.name()),
            tool: tool.map(|t| t.name),
        };
        let input = parsed.assemble(view, leash);
        if let Some(keep) = keep_input {
            *keep = Some(input.clone());
        }
        Ok(Verdict::new(
            evaluate(set, input),
            Some(set.info().revision.clone()),
            facts,
        ))
    }

    /// Evaluates an input document as given with the serving policy set.
    pub fn decide(&self, input: Value) -> Verdict {
        let serving = self.policy.current();
        match serving.as_ref() {
            Some(set) => Verdict::new(
                evaluate(set, input),
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

    /// The classifier for `set`'s revision, built on the first Check that needs it.
    fn classifier_for(&self, set: &PolicySet) -> Arc<RevisionClassifier> {
        let revision = &set.info().revision;
        if let Some(cached) = self.classifier.load().as_ref() {
            if Arc::ptr_eq(&cached.0, revision) {
                return Arc::clone(cached);
            }
        }
        // Validated when the set loaded; a table that still fails to read is left out.
        let from_data = action::from_data(set.data()).ok().flatten();
        let built = Arc::new((
            revision.clone(),
            Classifier::new(&self.actions, from_data.as_ref()),
        ));
        self.classifier.store(Some(built.clone()));
        built
    }
}

fn evaluate(set: &PolicySet, input: Value) -> Decision {
    match set.evaluate(input) {
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
