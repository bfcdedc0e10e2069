//! The steps of one Check, in order, and nothing else:
//!
//! ```text
//! RequestView -> input document -> policy evaluation -> result shape -> Decision
//! ```
//!
//! Token verification and binding, and live context (task, session, risk), slot in
//! before the input is built; they add to `input.leash` and may deny on their own.
//! `check` never fails: every error becomes a denial with a reason code.

use std::sync::Arc;

use crate::decision::{Decision, DenyReason};
use crate::policy::input::{self, InputError, InputLimits};
use crate::policy::{EvalError, PolicyStore, Value, outcome};
use crate::view::RequestView;

/// One Check's result, with what the decision log needs to explain it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    /// Unique per Check; Envoy's access log prints it from dynamic metadata.
    pub decision_id: String,
    /// The policy revision that decided, if one was serving.
    pub revision: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct Pipeline {
    policy: Arc<PolicyStore>,
    limits: InputLimits,
}

impl Pipeline {
    pub fn new(policy: Arc<PolicyStore>, limits: InputLimits) -> Self {
        Self { policy, limits }
    }

    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.policy
    }

    pub fn check(&self, view: &RequestView) -> Verdict {
        match self.input(view) {
            Ok(input) => self.decide(input),
            Err(err) => Verdict::new(Decision::deny(input_reason(&err), err.to_string()), None),
        }
    }

    /// The input document the policy sees for `view`; `leash check` prints it.
    pub fn input(&self, view: &RequestView) -> Result<Value, InputError> {
        input::build(view, &self.limits)
    }

    /// Evaluates an input document with the serving policy set.
    pub fn decide(&self, input: Value) -> Verdict {
        let serving = self.policy.current();
        let Some(set) = serving.as_ref() else {
            return Verdict::new(
                Decision::deny(
                    DenyReason::PolicyUnavailable,
                    "no policy set has loaded yet; the policy load errors are in the log",
                ),
                None,
            );
        };
        let decision = match set.evaluate(input) {
            Err(err @ EvalError::Limit(_)) => {
                Decision::deny(DenyReason::PolicyLimitExceeded, err.to_string())
            }
            Err(err @ EvalError::Failed(_)) => {
                Decision::deny(DenyReason::PolicyError, err.to_string())
            }
            Ok(result) => match outcome::read(&result) {
                Ok(answer) => Decision::from_policy(answer),
                Err(err) => Decision::deny(err.reason(), err.to_string()),
            },
        };
        Verdict::new(decision, Some(set.info().revision.clone()))
    }
}

impl Verdict {
    fn new(decision: Decision, revision: Option<Arc<str>>) -> Self {
        Self {
            decision,
            decision_id: uuid::Uuid::new_v4().to_string(),
            revision,
        }
    }
}

fn input_reason(err: &InputError) -> DenyReason {
    match err {
        InputError::InvalidPath(_) => DenyReason::RequestInvalidPath,
        InputError::BodyTooLarge { .. } => DenyReason::RequestBodyTooLarge,
        InputError::BodyTooDeep { .. } => DenyReason::RequestBodyTooDeep,
    }
}
