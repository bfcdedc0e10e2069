//! A policy set: parsed, compiled and warmed before it may serve a single Check.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use regorus::languages::rego::compiler::Compiler;
use regorus::{Engine, Value};
use sha2::{Digest, Sha256};

use super::engine::{EngineKind, EvalError, EvalLimits, Evaluator, Interpreter, VmProgram};
use super::library::{self, Library};
use super::problem::{PolicyLoadError, Problem};
use super::source::{DataFile, DataFormat, PolicySource, SourceFile, SourceFiles};

/// The rule whose value is the decision, e.g. `data.envoy.authz.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRule(String);

impl DecisionRule {
    /// Accepts OPA's plugin form (`envoy/authz/allow`) or a rule reference
    /// (`data.envoy.authz.allow`).
    pub fn parse(path: &str) -> Result<Self, String> {
        let trimmed = path.trim();
        let body = trimmed
            .strip_prefix("data.")
            .unwrap_or(trimmed)
            .trim_matches('/');
        let segments: Vec<&str> = if body.contains('/') {
            body.split('/').collect()
        } else {
            body.split('.').collect()
        };
        if body.is_empty() {
            return Err("the decision path is empty; use e.g. envoy/authz/allow".to_owned());
        }
        if let Some(bad) = segments.iter().find(|s| !is_identifier(s)) {
            return Err(format!(
                "decision path {path:?} has segment {bad:?}, which is not a Rego identifier \
                 (letters, digits and _, not starting with a digit)"
            ));
        }
        if segments.len() < 2 {
            return Err(format!(
                "decision path {path:?} names no package; use package/rule, e.g. envoy/authz/allow"
            ));
        }
        Ok(Self(format!("data.{}", segments.join("."))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DecisionRule {
    fn default() -> Self {
        Self("data.envoy.authz.allow".to_owned())
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegoVersion {
    /// Rego v1 (OPA 1.x, the plugin's default): `if` and `contains` are required.
    #[default]
    V1,
    /// Rego v0, for policies written before OPA 1.0.
    V0,
}

/// Which evaluator serves. `Auto` takes the bytecode VM when the policy compiles to it
/// and decides the warm-up inputs exactly as the interpreter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    #[default]
    Auto,
    Vm,
    Interpreter,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub decision: DecisionRule,
    pub rego_version: RegoVersion,
    pub engine: EngineChoice,
    pub limits: EvalLimits,
    /// Builds what other modules read from `data` (e.g. `data.leash.actions`, compiled)
    /// when the set loads: a malformed table rejects the set instead of surfacing on a
    /// Check, and no Check builds it.
    pub prepare: Option<Prepare>,
    /// A load running longer is abandoned and the serving set kept; `None` waits (the
    /// authoring commands, run in the foreground).
    pub load_timeout: Option<std::time::Duration>,
}

/// What a [`Prepare`] hook built from a set's data, served with the set.
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// Builds a [`Prepared`] value from a set's `data`, or says why it cannot.
pub type PrepareFn = dyn Fn(&Value) -> Result<Prepared, String> + Send + Sync;

/// A hook run on a candidate set's `data`; an error rejects the set.
#[derive(Clone)]
pub struct Prepare(pub Arc<PrepareFn>);

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepare(..)")
    }
}

/// Why `auto` serves a set with modules of the operator's on the interpreter.
const OPERATOR_MODULES: &str = "modules other than the shipped library run on the interpreter: \
    it denies when a rule raises an error, where the VM makes that rule not match (a deny \
    rule that errors would vanish); policy.engine: vm trades that for speed";

/// What `engine: vm` gives up on modules other than the shipped library.
const VM_FORCED: &str = "policy.engine is vm: a rule body that raises an error does not match \
    instead of denying, and conflicting rule values are undefined; write policies that allow \
    only on positive evidence";

/// A compiled, warmed policy revision. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct PolicySet {
    evaluator: Evaluator,
    /// The library in Rust, for a set made of the shipped library alone.
    library: Option<Library>,
    info: Arc<PolicyInfo>,
    data: Value,
    prepared: Option<Prepared>,
}

/// What `Status` and the logs report about a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Content hash of the files and the options that shape decisions.
    pub revision: Arc<str>,
    pub source: String,
    pub files: Vec<String>,
    pub decision_rule: String,
    pub engine: EngineKind,
    /// Why the interpreter serves when the VM was not chosen by configuration.
    pub engine_note: Option<String>,
    pub loaded_at: SystemTime,
    /// Whether any module mentions `leash`, so may read `input.leash`. Sets that never
    /// do (a policy written for OPA's plugin) are spared building it on every Check.
    pub reads_agent_context: bool,
}

/// The inputs every candidate set is evaluated on before it may serve, by every engine:
/// regorus reports unknown functions, rule conflicts and runtime errors only then.
#[derive(Debug, Clone, Default)]
pub struct Warmup {
    pub inputs: Vec<Value>,
    /// How many of them, from the first, are also evaluated with each member removed in
    /// turn, to catch the VM and the interpreter reading a missing value differently.
    /// The others vary what the probed ones cover (a live context filled in), and
    /// probing them too would double the time a reload takes.
    pub probed: usize,
}

impl PolicySet {
    /// Reads, parses, compiles and warms a set on `warmup`.
    pub fn load(
        source: &PolicySource,
        options: &LoadOptions,
        warmup: &Warmup,
    ) -> Result<Self, PolicyLoadError> {
        let files = source.read()?;
        Self::compile(source, &files, options, warmup)
    }

    pub(crate) fn compile(
        source: &PolicySource,
        files: &SourceFiles,
        options: &LoadOptions,
        warmup: &Warmup,
    ) -> Result<Self, PolicyLoadError> {
        let probed = warmup.inputs.get(..warmup.probed).unwrap_or(&warmup.inputs);
        let warmup = warmup.inputs.as_slice();
        let (mut engine, data) = parse(files, options.rego_version)?;
        let prepared = options
            .prepare
            .as_ref()
            .map(|prepare| (prepare.0)(&data))
            .transpose()
            .map_err(|message| Problem::general(source.describe(), message))?;
        let rule = options.decision.as_str();
        let compiled = engine.compile_with_entrypoint(&rule.into()).map_err(|err| {
            let text = err.to_string();
            if text.contains("not a valid rule path") {
                Problem::general(
                    source.describe(),
                    format!(
                        "the decision rule {rule} is not defined by any loaded module; \
                         add it (package and rule name) or set policy.decision to a rule that exists"
                    ),
                )
            } else {
                Problem::from_regorus(&source.describe(), &err)
            }
        })?;
        let interpreter =
            Evaluator::Interpreter(Interpreter::new(compiled.clone(), options.limits));
        let expected = warm(&interpreter, warmup)?;

        let proven = files.modules.iter().all(SourceFile::is_embedded);
        let (evaluator, engine_note) = match options.engine {
            EngineChoice::Interpreter => (interpreter, None),
            // The VM makes a rule body that raises an error simply not match, and a
            // conflict undefined: a deny rule that errors vanishes. The shipped library
            // allows only on positive evidence and is tested for exactly this on both
            // engines; other modules are served by the interpreter, which denies.
            EngineChoice::Auto if !proven => (interpreter, Some(OPERATOR_MODULES.to_owned())),
            EngineChoice::Vm | EngineChoice::Auto => {
                let vm = Compiler::compile_from_policy(&compiled, &[rule])
                    .map_err(|err| PolicyLoadError::from(Problem::from_regorus(&source.describe(), &err)))
                    .and_then(|program| {
                        let vm = Evaluator::Vm(VmProgram::new(program, data.clone(), options.limits));
                        let got = warm(&vm, warmup)?;
                        if got != expected {
                            return Err(Problem::general(
                                source.describe(),
                                "the bytecode VM decides the warm-up input differently from the interpreter",
                            )
                            .into());
                        }
                        match first_divergence(&vm, &interpreter, probed) {
                            None => Ok(vm),
                            Some(path) => Err(Problem::general(
                                source.describe(),
                                format!(
                                    "the bytecode VM decides a warm-up input without {path} differently \
                                     from the interpreter (a value the policy reads may be undefined)"
                                ),
                            )
                            .into()),
                        }
                    });
                match (vm, options.engine) {
                    (Ok(vm), _) if proven => (vm, None),
                    (Ok(vm), _) => (vm, Some(VM_FORCED.to_owned())),
                    (Err(err), EngineChoice::Vm) => return Err(err),
                    (Err(err), _) => (interpreter, Some(err.to_string())),
                }
            }
        };

        // The Rust form stands for the library as the VM serves it: when the VM could
        // not (data clashing with a rule's path fails there), neither does it.
        let vm_serves = evaluator.kind() == EngineKind::Vm && engine_note.is_none();
        let (library, library_note) = match native(files, options, &data) {
            Ok(Some(_)) if !vm_serves => (None, None),
            Ok(Some(library)) => match disagreement(&library, &evaluator, warmup) {
                None => (Some(library), None),
                Some(why) => (None, Some(why)),
            },
            Ok(None) => (None, None),
            Err(why) => (None, Some(why)),
        };
        let engine_note = match (engine_note, library_note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let info = PolicyInfo {
            revision: revision(files, options).into(),
            source: source.describe(),
            files: files
                .modules
                .iter()
                .map(|f| f.path.clone())
                .chain(files.data.iter().map(|d| d.file.path.clone()))
                .collect(),
            decision_rule: rule.to_owned(),
            engine: if library.is_some() {
                EngineKind::Native
            } else {
                evaluator.kind()
            },
            engine_note,
            loaded_at: SystemTime::now(),
            reads_agent_context: files.modules.iter().any(|m| m.text.contains("leash")),
        };
        Ok(Self {
            evaluator,
            library,
            info: Arc::new(info),
            data,
            prepared,
        })
    }

    /// What the load's [`Prepare`] hook built, if it built a `T`.
    pub fn prepared<T: Any>(&self) -> Option<&T> {
        self.prepared.as_deref()?.downcast_ref()
    }

    /// The merged `data` document of the set.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The decision for `input`: the library in Rust when it can say, else the Rego.
    pub fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        let native = self
            .library
            .as_ref()
            .and_then(|lib| lib.decide(&library::Input::read(&input)?));
        match native {
            Some(decision) => Ok(decision),
            None => self.evaluator.evaluate(input),
        }
    }

    /// [`evaluate`](Self::evaluate) for a Check decided at `now` (Unix seconds): the
    /// time builtins such as `io.jwt.decode_verify` read.
    pub fn evaluate_at(&self, input: Value, now: i64) -> Result<Value, EvalError> {
        super::builtins::at(now, || self.evaluate(input))
    }

    /// The library in Rust, when this set is the shipped library alone: the Check
    /// path gives it typed facts and builds no input document.
    pub fn library(&self) -> Option<&Library> {
        self.library.as_ref()
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub fn info_arc(&self) -> Arc<PolicyInfo> {
        self.info.clone()
    }
}

/// The library in Rust for a set it can decide: the shipped library alone (any data
/// of the operator's beside it), its own decision rule, and `engine: auto`. `Err`
/// says why a set of the library alone is left to the Rego.
fn native(
    files: &SourceFiles,
    options: &LoadOptions,
    data: &Value,
) -> Result<Option<Library>, String> {
    // Embedded modules are only ever read all together.
    let library_alone =
        !files.modules.is_empty() && files.modules.iter().all(SourceFile::is_embedded);
    if options.engine != EngineChoice::Auto
        || !library_alone
        || options.decision != DecisionRule::default()
    {
        return Ok(None);
    }
    let mut hash = Sha256::new();
    for module in &files.modules {
        hash.update(module.path.as_bytes());
        hash.update([0]);
        hash.update(module.text.as_bytes());
        hash.update([0]);
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if digest != library::SPECIFICATION {
        return Err(format!(
            "the library is evaluated as Rego: its modules (sha256 {digest}) are not the ones \
             policy/library.rs implements"
        ));
    }
    Library::new(data)
        .map(Some)
        .map_err(|why| format!("the library is evaluated as Rego: {why}"))
}

/// Why the library in Rust may not serve: it decides a warm-up input otherwise than
/// the Rego does.
fn disagreement(library: &Library, rego: &Evaluator, warmup: &[Value]) -> Option<String> {
    warmup.iter().find_map(|input| {
        let native = library.decide(&library::Input::read(input)?)?;
        (rego.evaluate(input.clone()).ok().as_ref() != Some(&native)).then(|| {
            "the library is evaluated as Rego: its Rust form decides a warm-up input differently"
                .to_owned()
        })
    })
}

/// Parses every module and merges every data file, reporting all problems at once.
pub(crate) fn parse(
    files: &SourceFiles,
    version: RegoVersion,
) -> Result<(Engine, Value), PolicyLoadError> {
    let mut engine = Engine::new();
    engine.set_rego_v0(version == RegoVersion::V0);
    super::builtins::register(&mut engine)
        .map_err(|e| Problem::general("builtins", e.to_string()))?;
    let mut problems = Vec::new();
    for module in &files.modules {
        if let Err(err) = engine.add_policy(module.path.clone(), module.text.clone()) {
            problems.push(Problem::from_regorus(&module.path, &err));
        }
    }
    let mut data = Value::new_object();
    for file in &files.data {
        if let Err(problem) = merge_data(&mut data, file) {
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        return Err(PolicyLoadError { problems });
    }
    engine
        .add_data(data.clone())
        .map_err(|err| Problem::from_regorus("data", &err))?;
    Ok((engine, data))
}

/// The first member whose absence makes the two engines decide a warm-up input
/// differently, as `input.a.b`. regorus's VM does not fail a rule body on
/// `x := <undefined>`, so a later `not` on `x` succeeds where the interpreter (and
/// OPA) fail the body; inputs with one member missing at a time bring such rules out
/// before the VM may serve them. Errors compare equal to errors.
fn first_divergence(vm: &Evaluator, interpreter: &Evaluator, inputs: &[Value]) -> Option<String> {
    let mut path = Vec::new();
    inputs.iter().find_map(|input| {
        let mut found = None;
        for_each_removal(input, &mut path, &mut |variant, path| {
            if found.is_none() {
                let a = vm.evaluate(variant.clone()).ok();
                let b = interpreter.evaluate(variant).ok();
                if a != b {
                    found = Some(format!("input.{}", path.join(".")));
                }
            }
        });
        found
    })
}

/// Calls `f` with `input` less one member, for every member of every object in it
/// (arrays are left whole: a missing element is not a shape requests take).
fn for_each_removal(input: &Value, path: &mut Vec<String>, f: &mut dyn FnMut(Value, &[String])) {
    let Value::Object(members) = input else {
        return;
    };
    for (key, value) in members.iter() {
        let name = key
            .as_string()
            .map_or_else(|_| key.to_string(), |s| s.to_string());
        path.push(name);
        let mut without = input.clone();
        if let Ok(object) = without.as_object_mut() {
            object.remove(key);
        }
        f(without, path);
        // The variants of a member, each placed back into the whole input.
        for_each_removal(value, path, &mut |inner, inner_path| {
            let mut whole = input.clone();
            if let Ok(object) = whole.as_object_mut() {
                object.insert(key.clone(), inner);
            }
            f(whole, inner_path);
        });
        path.pop();
    }
}

fn warm(evaluator: &Evaluator, inputs: &[Value]) -> Result<Vec<Value>, PolicyLoadError> {
    inputs
        .iter()
        .map(|input| {
            evaluator.evaluate(input.clone()).map_err(|err| {
                Problem::general(
                    format!("warm-up ({})", evaluator.kind().name()),
                    err.to_string(),
                )
                .into()
            })
        })
        .collect()
}

/// Places a data file's document under `data.<folders...>`, refusing to overwrite
/// a value another file already set.
fn merge_data(root: &mut Value, file: &DataFile) -> Result<(), Problem> {
    let parsed = match file.format {
        DataFormat::Json => Value::from_json_str(&file.file.text),
        DataFormat::Yaml => Value::from_yaml_str(&file.file.text),
    }
    .map_err(|err| Problem::general(&file.file.path, format!("cannot parse: {err}")))?;
    if !matches!(parsed, Value::Object(_)) {
        return Err(Problem::general(
            &file.file.path,
            "a data file must hold an object at its top level",
        ));
    }
    let mut slot = root;
    for folder in &file.folders {
        let object = slot.as_object_mut().map_err(|_| conflict(file, folder))?;
        let key = Value::from(folder.as_str());
        if object.get(&key).is_none() {
            object.insert(key.clone(), Value::new_object());
        }
        slot = object.get_mut(&key).ok_or_else(|| conflict(file, folder))?;
    }
    merge_objects(slot, parsed).map_err(|key| conflict(file, &key))
}

fn merge_objects(into: &mut Value, from: Value) -> Result<(), String> {
    let Value::Object(from) = from else {
        return Err(String::new());
    };
    let target = into.as_object_mut().map_err(|_| String::new())?;
    for (key, value) in from.iter() {
        match target.get_mut(key) {
            Some(existing @ Value::Object(_)) if matches!(value, Value::Object(_)) => {
                merge_objects(existing, value.clone()).map_err(|inner| join_key(key, &inner))?;
            }
            Some(_) => return Err(join_key(key, "")),
            None => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn join_key(key: &Value, inner: &str) -> String {
    let key = key
        .as_string()
        .map_or_else(|_| key.to_string(), |s| s.to_string());
    if inner.is_empty() {
        key
    } else {
        format!("{key}.{inner}")
    }
}

fn conflict(file: &DataFile, key: &str) -> Problem {
    Problem::general(
        &file.file.path,
        format!("sets data key {key:?}, which another data file already sets"),
    )
}

pub(crate) fn revision(files: &SourceFiles, options: &LoadOptions) -> String {
    let mut hash = Sha256::new();
    for file in files
        .modules
        .iter()
        .chain(files.data.iter().map(|d| &d.file))
    {
        hash.update(file.path.as_bytes());
        hash.update([0]);
        hash.update(file.text.as_bytes());
        hash.update([0]);
    }
    hash.update(options.decision.as_str().as_bytes());
    hash.update([options.rego_version as u8]);
    let digest = hash.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_in_rust_implements_the_embedded_modules() {
        let files = PolicySource::Embedded.read().unwrap();
        let native = native(&files, &LoadOptions::default(), &Value::new_object());
        assert!(
            matches!(native, Ok(Some(_))),
            "{:?}: a change to rego/ must be brought to policy/library.rs, and its \
             SPECIFICATION updated",
            native.err()
        );
    }
}
