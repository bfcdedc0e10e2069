//! Evaluation of a compiled policy: regorus's bytecode VM where the policy allows it,
//! its interpreter otherwise. Both are bounded by the same time and instruction limits.

use std::cell::RefCell;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::rvm::Program;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, LimitError, Value};

use super::problem::Problem;

/// Bounds on one evaluation. A policy that needs more is denied, not waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalLimits {
    pub timeout: Duration,
    /// Bytecode instructions per evaluation (VM only; the interpreter is bounded by time).
    pub max_instructions: NonZeroUsize,
}

impl Default for EvalLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            max_instructions: NonZeroUsize::new(5_000_000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl EvalLimits {
    fn timer(self) -> ExecutionTimerConfig {
        ExecutionTimerConfig {
            limit: self.timeout,
            // Reading the clock every 64 work units keeps its cost out of the profile
            // while a runaway loop is still stopped within microseconds of the limit.
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("evaluation exceeded its limit: {0}")]
    Limit(String),
    #[error("evaluation failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Vm,
    Interpreter,
    /// The shipped library in Rust (`policy::library`), the Rego VM beside it.
    Native,
}

impl EngineKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Interpreter => "interpreter",
            Self::Native => "native",
        }
    }
}

/// A compiled policy ready to evaluate from many threads at once.
#[derive(Debug, Clone)]
pub(crate) enum Evaluator {
    Vm(VmProgram),
    Interpreter(Interpreter),
}

impl Evaluator {
    pub(crate) fn kind(&self) -> EngineKind {
        match self {
            Self::Vm(_) => EngineKind::Vm,
            Self::Interpreter(_) => EngineKind::Interpreter,
        }
    }

    pub(crate) fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        match self {
            Self::Vm(vm) => vm.evaluate(input),
            Self::Interpreter(interp) => interp.evaluate(input),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Interpreter {
    compiled: CompiledPolicy,
}

impl Interpreter {
    pub(crate) fn new(compiled: CompiledPolicy, limits: EvalLimits) -> Self {
        // `CompiledPolicy` builds a fresh engine per call, and such engines take their
        // time limit from this process-wide setting.
        regorus::utils::limits::set_fallback_execution_timer_config(Some(limits.timer()));
        Self { compiled }
    }

    fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        self.compiled
            .eval_with_input(input)
            .map_err(|err| match err.downcast_ref::<LimitError>() {
                Some(limit) => EvalError::Limit(limit.to_string()),
                None => EvalError::Failed(redact(&one_line(&err))),
            })
    }
}

/// The bytecode program of one policy revision. A `RegoVM` needs `&mut self`, so each
/// worker thread keeps its own, built once per revision and reused for every Check.
#[derive(Debug, Clone)]
pub(crate) struct VmProgram {
    id: u64,
    program: Arc<Program>,
    data: Value,
    limits: EvalLimits,
}

static NEXT_PROGRAM_ID: AtomicU64 = AtomicU64::new(1);

/// Revisions a thread keeps VMs for: the serving one and the one it replaced, so a
/// swap during a burst does not rebuild VMs back and forth.
const VMS_PER_THREAD: usize = 2;

thread_local! {
    static VMS: RefCell<Vec<(u64, RegoVM)>> = const { RefCell::new(Vec::new()) };
}

impl VmProgram {
    pub(crate) fn new(program: Arc<Program>, data: Value, limits: EvalLimits) -> Self {
        Self {
            id: NEXT_PROGRAM_ID.fetch_add(1, Ordering::Relaxed),
            program,
            data,
            limits,
        }
    }

    fn new_vm(&self) -> Result<RegoVM, EvalError> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())
            .map_err(|err| EvalError::Failed(err.to_string()))?;
        vm.set_max_instructions(self.limits.max_instructions.get());
        // Strict builtin errors would not make the VM deny: it catches a body's errors
        // and treats the body as not matching, so they would only add errors (mixed-type
        // comparisons) the interpreter does not raise. Which policies the VM may serve
        // at all is decided in `set.rs`.
        vm.set_execution_timer_config(Some(self.limits.timer()));
        Ok(vm)
    }

    fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        VMS.with(|cell| {
            let Ok(mut vms) = cell.try_borrow_mut() else {
                // Only reachable if evaluation re-entered itself; never share a busy VM.
                return run(&mut self.new_vm()?, input);
            };
            let pos = match vms.iter().position(|(id, _)| *id == self.id) {
                Some(pos) => pos,
                None => {
                    if vms.len() >= VMS_PER_THREAD {
                        vms.remove(0);
                    }
                    vms.push((self.id, self.new_vm()?));
                    vms.len() - 1
                }
            };
            match vms.get_mut(pos) {
                Some((_, vm)) => run(vm, input),
                None => run(&mut self.new_vm()?, input),
            }
        })
    }
}

fn run(vm: &mut RegoVM, input: Value) -> Result<Value, EvalError> {
    vm.set_input(input);
    vm.execute().map_err(|err| match err {
        VmError::InstructionLimitExceeded { .. }
        | VmError::TimeLimitExceeded { .. }
        | VmError::MemoryLimitExceeded { .. }
        | VmError::MemoryBudgetExceeded { .. }
        | VmError::RegexSizeLimitExceeded { .. } => EvalError::Limit(err.to_string()),
        other => EvalError::Failed(redact(&other.to_string())),
    })
}

/// An evaluation error without the values it quotes. regorus names the value a
/// builtin choked on (`Got \`"Bearer eyJ..."\` instead`), and the message reaches the
/// decision log: values from the request, a token among them, must not. Names of
/// builtins, rules and types are kept.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('`') {
        let (before, quoted) = rest.split_at(start);
        out.push_str(before);
        let Some(end) = quoted.get(1..).and_then(|q| q.find('`')) else {
            out.push_str("`…");
            return out;
        };
        let inner = quoted.get(1..=end).unwrap_or_default();
        // Strings print quoted, so a name is an identifier; a number may be a value.
        let name = inner.len() <= 64
            && inner
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && inner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']'));
        if !name {
            // A value may hold backticks of its own, so where it ends is unknowable:
            // nothing after its start is kept.
            out.push_str("`<value>` …");
            rest = "";
            break;
        }
        out.push('`');
        out.push_str(inner);
        out.push('`');
        rest = quoted.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    // A token quoted any other way.
    match JWT.as_ref() {
        Some(jwt) => jwt.replace_all(&out, "<token>").into_owned(),
        None => out,
    }
}

/// Three base64url runs joined by dots: a compact JWS.
static JWT: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}").ok()
});

/// regorus errors carry a multi-line source excerpt; logs want one line.
pub(crate) fn one_line(err: &dyn std::fmt::Display) -> String {
    let problem = Problem::from_regorus("", err);
    if problem.line == 0 {
        problem.message
    } else {
        problem.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn errors_keep_names_and_lose_values() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        let message = format!(
            "policy.rego:4:8: error: `object.get` expects object argument. Got `\"Bearer {jwt}\"` instead"
        );
        assert_eq!(
            redact(&message),
            "policy.rego:4:8: error: `object.get` expects object argument. Got `<value>` …"
        );
        // A backtick inside the value cannot end the redaction early.
        assert_eq!(
            redact("`object.get` got `{\"a\":\"`\",\"authorization\":\"Bearer s3cret\"}` instead"),
            "`object.get` got `<value>` …"
        );
        assert_eq!(
            redact(&format!("bad token {jwt} here")),
            "bad token <token> here"
        );
        assert_eq!(redact("unterminated `abc"), "unterminated `…");
        assert_eq!(
            redact("`to_number` got `4111111111111111`"),
            "`to_number` got `<value>` …"
        );
    }
}
