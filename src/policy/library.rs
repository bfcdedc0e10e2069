//! The shipped governance library (`rego/leash`, decided by `rego/envoy/authz`) in
//! Rust, for sets made of that library alone.
//!
//! The Rego stays the specification: it is what operators read, test and extend, and
//! a set with modules of their own is evaluated as Rego. On regorus's VM the library
//! costs about 20 µs a Check, most of it rule calls and set building; here it costs
//! well under one, and no input document is built for it.
//!
//! It answers only where it is exact: inputs in the shape leash builds and data in
//! the documented shape. Anything else ([`Library::decide`] returns `None`, or a set
//! whose data does not fit) is left to the Rego. Tests compare the two result for
//! result on the library's shared cases, on random inputs with members removed or
//! nulled, and on every request of the hostile corpus; a set also compares them on its
//! warm-up inputs before it serves.

use std::collections::BTreeSet;

use regorus::Value;

/// The sha256 of the embedded library's modules (path and text) this file implements.
/// A change to the Rego turns the Rust form off until it is brought along, and a test
/// fails meanwhile.
pub const SPECIFICATION: &str = "6ab0cfdb1f6f21756229b6dbc1de0626947375cdcc9719d22c2e94dd875720b1";

/// Data paths of the library's own rules. Data there clashes with a rule: the VM
/// refuses it and the interpreter lets it override the rule.
const RULE_PATHS: [(&str, &str); 3] = [("leash", "lib"), ("leash", "gates"), ("envoy", "authz")];

/// An action's class, in the library's order: a scope for one covers those below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Read,
    Write,
    Destructive,
}

impl Class {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "destructive" => Some(Self::Destructive),
            _ => None,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }
}

/// The kinds of resource a scope can name (`data.leash.lib.kinds`).
const KINDS: [&str; 5] = ["tool", "resource", "prompt", "rule", "host"];

/// What the library reads of `input.leash`.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub authenticated: bool,
    pub class: Class,
    /// Whether `action.tags` holds `export`, `privilege` and `opaque_body`: the only
    /// tags the library reads.
    pub export: bool,
    pub privilege: bool,
    pub opaque_body: bool,
    /// `resource.kind` and `resource.name`.
    pub kind: &'a str,
    pub name: &'a str,
    /// `human` when a non-empty string.
    pub human: Option<&'a str>,
    /// `scopes` when an array, else empty.
    pub scopes: &'a [Value],
    /// `authorization_details` when an array, else empty.
    pub authorization_details: &'a [Value],
    /// `task` when a string.
    pub task: Option<&'a str>,
    pub depth: i64,
    /// `tool.name` and `tool.known`, when `tool` is an object with both.
    pub tool: Option<(&'a str, bool)>,
    /// The highest live risk score in `context.risk` across the subject kinds.
    pub risk: i64,
    /// `context.approval` allows this action now (`data.leash.lib.approved`).
    pub approved: bool,
}

impl<'a> Input<'a> {
    /// The library's view of a whole input document (`input.leash` within it), or
    /// `None` when `input.leash` is not in the shape leash builds.
    pub fn read(input: &'a Value) -> Option<Self> {
        let leash = member(input, "leash")?;
        let action = member(leash, "action")?;
        let resource = member(leash, "resource")?;
        let tags = array(member(action, "tags")?)?;
        let mut tag_names = Vec::with_capacity(tags.len());
        for tag in tags {
            tag_names.push(string(tag)?);
        }
        let has = |name: &str| tag_names.contains(&name);
        let tool = match member(leash, "tool") {
            None | Some(Value::Null) => None,
            Some(tool) => Some((
                string(member(tool, "name")?)?,
                boolean(member(tool, "known")?)?,
            )),
        };
        Some(Self {
            authenticated: boolean(member(leash, "authenticated")?)?,
            class: Class::parse(string(member(action, "class")?)?)?,
            export: has("export"),
            privilege: has("privilege"),
            opaque_body: has("opaque_body"),
            kind: string(member(resource, "kind")?)?,
            name: string(member(resource, "name")?)?,
            human: member(leash, "human").and_then(human),
            scopes: array_or_empty(member(leash, "scopes")),
            authorization_details: array_or_empty(member(leash, "authorization_details")),
            task: member(leash, "task").and_then(string),
            depth: integer(member(member(leash, "delegation")?, "depth")?)?,
            tool,
            risk: risk_score(member(member(leash, "context")?, "risk")?)?,
            approved: member(member(leash, "context")?, "approval").is_some_and(approved),
        })
    }
}

/// `data.leash.lib.risk_score`: the highest `max` of the four subject kinds, each a
/// whole number; `None` (left to the Rego) for any other shape.
fn risk_score(risk: &Value) -> Option<i64> {
    let mut highest = i64::MIN;
    for subject in RISK_SUBJECTS {
        highest = highest.max(integer(member(member(risk, subject)?, "max")?)?);
    }
    Some(highest)
}

/// `data.leash.lib.approved`: status "approved" and a number of uses above 0.
fn approved(approval: &Value) -> bool {
    member(approval, "status").is_some_and(|s| s == &Value::from("approved"))
        && matches!(
            member(approval, "uses_left"),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|n| n > 0.0)
        )
}

/// `data.leash.lib.risk_subjects`.
const RISK_SUBJECTS: [&str; 4] = ["agent", "human", "workload", "task"];

/// A whole number of 0 or more written without a fraction: one regorus prints with
/// `%d` as Rust prints an `i64` (a negative or fractional one it prints otherwise).
fn whole(value: &Value) -> Option<i64> {
    integer(value)
        .filter(|n| *n >= 0 && serde_json::to_string(value).is_ok_and(|s| s == n.to_string()))
}

/// `human` as the library defines it: a non-empty string.
pub fn human(value: &Value) -> Option<&str> {
    string(value).filter(|h| !h.is_empty())
}

/// An array's elements, or none for anything else.
pub fn array_or_empty(value: Option<&Value>) -> &[Value] {
    value.and_then(array).unwrap_or_default()
}

// Matched by hand: regorus's `as_*` accessors build an `anyhow` error on a mismatch,
// which captures a backtrace when RUST_BACKTRACE is set, costing microseconds.

/// A number the library can print with `%d` as Rust prints an `i64`.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn string(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(a) => Some(a.as_slice()),
        _ => None,
    }
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn member<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    match value {
        Value::Object(o) => o.get(&Value::from(key)),
        _ => None,
    }
}

/// The library's settings and grants (`data.leash.settings`, `data.leash.grants`).
#[derive(Debug, Clone)]
pub struct Library {
    max_delegation_depth: i64,
    /// Whether each class, in [`Class`] order, needs a human: `human_required_for`
    /// read once, so a Check compares no values.
    human_required_for: [bool; 3],
    allow_unknown_tools: bool,
    /// The highest risk score each class tolerates, in [`Class`] order; `None` where
    /// the setting names no number for the class (the requirement is then unmet).
    max_risk: [Option<i64>; 3],
    /// Whether an authenticated call of each class, in [`Class`] order, gets a minted
    /// credential (`mint_for`).
    mint_for: [bool; 3],
    /// `data.leash.grants`: task -> grant kind -> names.
    grants: Value,
    /// The allow results per class, in [`Class`] order, without and with `mint`,
    /// built once.
    allows: [[Value; 2]; 3],
}

impl Library {
    /// The library over a set's `data`, or why the data leaves it to the Rego: a value
    /// of a shape whose Rego meaning is not plainly the documented one.
    pub fn new(data: &Value) -> Result<Self, String> {
        let leash = member(data, "leash");
        let settings = leash.and_then(|l| member(l, "settings"));
        let setting = |name| settings.and_then(|s| member(s, name));
        if let Some((a, b)) = RULE_PATHS
            .iter()
            .find(|(a, b)| member(data, a).and_then(|d| member(d, b)).is_some())
        {
            return Err(format!(
                "data.{a}.{b} is set, where the library's rules are"
            ));
        }
        // regorus prints a negative or fractional number with `%d` unlike Rust; only
        // whole numbers written without a fraction are taken.
        let max_delegation_depth = match setting("max_delegation_depth") {
            Some(value @ Value::Number(_)) => whole(value).ok_or(
                "data.leash.settings.max_delegation_depth is not a whole number of 0 or more"
                    .to_owned(),
            )?,
            _ => 2,
        };
        let needs_human = |class: Class| match setting("human_required_for") {
            Some(Value::Array(classes)) => classes.as_slice().contains(&Value::from(class.name())),
            _ => class != Class::Read,
        };
        let human_required_for = [
            needs_human(Class::Read),
            needs_human(Class::Write),
            needs_human(Class::Destructive),
        ];
        let allow_unknown_tools = matches!(setting("allow_unknown_tools"), Some(Value::Bool(true)));
        let mints = |class: Class| match setting("mint_for") {
            Some(Value::Array(classes)) => classes.as_slice().contains(&Value::from(class.name())),
            _ => class != Class::Read,
        };
        let mint_for = [
            mints(Class::Read),
            mints(Class::Write),
            mints(Class::Destructive),
        ];
        let max_risk = match setting("max_risk") {
            Some(limits @ Value::Object(_)) => {
                let limit = |class: Class| match member(limits, class.name()) {
                    Some(value @ Value::Number(_)) => whole(value).map(Some).ok_or_else(|| {
                        format!(
                            "data.leash.settings.max_risk.{} is not a whole number of 0 or more",
                            class.name()
                        )
                    }),
                    _ => Ok(None),
                };
                [
                    limit(Class::Read)?,
                    limit(Class::Write)?,
                    limit(Class::Destructive)?,
                ]
            }
            _ => [Some(80), Some(50), Some(20)],
        };
        let grants = leash
            .and_then(|l| member(l, "grants"))
            .cloned()
            .unwrap_or_else(Value::new_object);
        let documented = match &grants {
            Value::Object(tasks) => tasks.iter().all(|(_, kinds)| match kinds {
                Value::Object(kinds) => kinds.iter().all(|(_, names)| array(names).is_some()),
                _ => false,
            }),
            _ => false,
        };
        if !documented {
            return Err(
                "data.leash.grants is not an object of tasks, each an object of grant kinds, \
                 each a list of names"
                    .to_owned(),
            );
        }
        let allow = |class: Class| {
            let plain = object([
                ("allowed", Value::Bool(true)),
                (
                    "dynamic_metadata",
                    object([("leash_action", Value::from(class.name()))]),
                ),
            ]);
            let mut minted = plain.clone();
            if let Ok(map) = minted.as_object_mut() {
                map.insert(Value::from("mint"), Value::new_object());
            }
            [plain, minted]
        };
        Ok(Self {
            max_delegation_depth,
            human_required_for,
            allow_unknown_tools,
            max_risk,
            mint_for,
            grants,
            allows: [
                allow(Class::Read),
                allow(Class::Write),
                allow(Class::Destructive),
            ],
        })
    }

    /// The value of `data.envoy.authz.allow` for `input`, or `None` when it is not in
    /// the shape leash builds and only the Rego can say.
    pub fn decide(&self, input: &Input<'_>) -> Option<Value> {
        if !KINDS.contains(&input.kind) || input.name.is_empty() {
            return None;
        }
        let reasons = self.reasons(input);
        if reasons.is_empty() {
            let class = input.class as usize;
            let minted = input.authenticated && self.mint_for.get(class) == Some(&true);
            return self
                .allows
                .get(class)
                .and_then(|pair| pair.get(usize::from(minted)))
                .cloned();
        }
        // Approvable: the one reason is the missing destructive grant.
        let approvable = input.class == Class::Destructive
            && reasons.len() == 1
            && !self.granted(input, "destructive")
            && !input.approved;
        let mut value = denial(reasons);
        if approvable {
            let reason = match &value {
                Value::Object(o) => o.get(&Value::from("reason")).cloned(),
                _ => None,
            };
            if let (Ok(map), Some(reason)) = (value.as_object_mut(), reason) {
                map.insert(
                    Value::from("require_approval"),
                    object([("reason", reason)]),
                );
            }
        }
        Some(value)
    }

    /// One reason per unmet requirement (`data.leash.gates.deny`); none means allow.
    fn reasons(&self, input: &Input<'_>) -> BTreeSet<String> {
        let mut reasons = BTreeSet::new();
        let class = input.class.name();
        let id = || format!("{}:{}", input.kind, input.name);
        // identity and scope
        if input.authenticated {
            if !self.scope_covers(input) {
                reasons.insert(format!("scope {}:{class} is required", id()));
            }
        } else if input.class != Class::Read {
            reasons.insert("unauthenticated requests may only read".to_owned());
        }
        let [read, write, destructive] = self.human_required_for;
        let needs_human = match input.class {
            Class::Read => read,
            Class::Write => write,
            Class::Destructive => destructive,
        };
        if needs_human && input.human.is_none() {
            reasons.insert(format!(
                "{class} actions need a human on whose behalf the agent acts"
            ));
        }
        if input.depth > self.max_delegation_depth {
            reasons.insert(format!(
                "a delegation chain of {} agents exceeds the limit of {}",
                input.depth, self.max_delegation_depth
            ));
        }
        if input.class == Class::Destructive
            && !self.granted(input, "destructive")
            && !input.approved
        {
            reasons.insert(format!(
                "destructive action on {} needs an explicit grant or an approval",
                id()
            ));
        }
        if input.export && !self.granted(input, "export") {
            reasons.insert(format!("export from {} needs an export grant", id()));
        }
        if input.privilege && !self.granted(input, "privilege") {
            reasons.insert(format!(
                "privilege change on {} needs a privilege grant",
                id()
            ));
        }
        if input.privilege && input.human.is_none() {
            reasons.insert(format!(
                "privilege change on {} needs a human on whose behalf the agent acts",
                id()
            ));
        }
        if input.kind == "tool" && !self.tool_known(input) {
            reasons.insert(format!(
                "tool {} is not in the operator's tool table",
                input.name
            ));
        }
        let [read, write, destructive] = self.max_risk;
        let limit = match input.class {
            Class::Read => read,
            Class::Write => write,
            Class::Destructive => destructive,
        };
        match limit {
            Some(limit) if input.risk <= limit => {}
            Some(limit) => {
                reasons.insert(format!(
                    "risk score {} is above the {class} limit of {limit}",
                    input.risk
                ));
            }
            None => {
                reasons.insert("requirement risk is not met".to_owned());
            }
        }
        if input.opaque_body {
            reasons.insert(format!(
                "cannot tell what this {class} request to {} does: leash could not read its \
                 body; send JSON or a form, or name the route in an actions rule with \
                 allow_opaque_body",
                id()
            ));
        }
        reasons
    }

    /// `<kind>:<name>:<class>` covers the class and below on that resource; the name
    /// may hold colons, and `*` stands for every resource of the kind.
    fn scope_covers(&self, input: &Input<'_>) -> bool {
        input.scopes.iter().any(|scope| {
            let Some(scope) = string(scope) else {
                return false;
            };
            let Some((kind, rest)) = scope.split_once(':') else {
                return false;
            };
            let Some((name, class)) = rest.rsplit_once(':') else {
                return false;
            };
            kind == input.kind
                && (name == input.name || name == "*")
                && Class::parse(class).is_some_and(|c| c >= input.class)
        })
    }

    /// An explicit grant of `kind` for the resource: a scope, a `leash`
    /// authorization_details entry, or `data.leash.grants[task][kind]`.
    fn granted(&self, input: &Input<'_>, kind: &str) -> bool {
        let names = |name: &str| {
            name == "*"
                || name
                    .strip_prefix(input.kind)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|rest| rest == input.name || rest == "*")
        };
        let by_scope = input.scopes.iter().any(|scope| {
            string(scope).is_some_and(|scope| {
                scope
                    .strip_prefix(kind)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(names)
            })
        });
        let by_detail = || {
            input.authorization_details.iter().any(|detail| {
                member(detail, "type").is_some_and(|t| t == &Value::from("leash"))
                    && member(detail, "actions")
                        .and_then(array)
                        .is_some_and(|a| a.contains(&Value::from(kind)))
                    && member(detail, "identifier")
                        .and_then(string)
                        .is_some_and(names)
            })
        };
        let by_data = || {
            input.task.is_some_and(|task| {
                member(&self.grants, task)
                    .and_then(|kinds| member(kinds, kind))
                    .is_some_and(|listed| {
                        array_or_empty(Some(listed))
                            .iter()
                            .any(|n| string(n).is_some_and(names))
                    })
            })
        };
        by_scope || by_detail() || by_data()
    }

    fn tool_known(&self, input: &Input<'_>) -> bool {
        input
            .tool
            .is_some_and(|(name, known)| name == input.name && (known || self.allow_unknown_tools))
    }
}

/// The library's denial: every reason, sorted, in the body, the log and the response.
fn denial(reasons: BTreeSet<String>) -> Value {
    let list: Vec<Value> = reasons.iter().map(|r| Value::from(r.as_str())).collect();
    let joined = reasons.into_iter().collect::<Vec<_>>().join("; ");
    let body = object([
        ("error", Value::from("forbidden")),
        ("reasons", Value::from(list)),
    ]);
    object([
        ("allowed", Value::Bool(false)),
        ("http_status", Value::from(403u64)),
        (
            "headers",
            object([("content-type", Value::from("application/json"))]),
        ),
        (
            "body",
            Value::from(serde_json::to_string(&body).unwrap_or_default()),
        ),
        ("reason", Value::from(joined)),
    ])
}

fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    let mut out = Value::new_object();
    if let Ok(map) = out.as_object_mut() {
        for (key, value) in members {
            map.insert(Value::from(key), value);
        }
    }
    out
}
