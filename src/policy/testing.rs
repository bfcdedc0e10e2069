//! `leash test`: runs the Rego tests (`test_*` rules) of a policy source, as `opa test` does.

use std::time::{Duration, Instant};

use super::engine::one_line;
use super::problem::PolicyLoadError;
use super::set::{RegoVersion, parse};
use super::source::{PolicySource, SourceFiles};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStatus {
    Pass,
    /// The rule was false or undefined.
    Fail,
    /// Evaluation raised an error.
    Error(String),
    /// Named `todo_test_*`: listed, not run.
    Skipped,
}

#[derive(Debug, Clone)]
pub struct TestResult {
    /// Full rule path, e.g. `data.envoy.authz_test.test_allows_get`.
    pub name: String,
    pub file: String,
    pub status: TestStatus,
    pub duration: Duration,
    /// What the test printed with `print()`, shown for failures.
    pub prints: Vec<String>,
}

/// Loads every module, test and data file of `source` and evaluates each test rule.
pub fn run(
    source: &PolicySource,
    version: RegoVersion,
) -> Result<Vec<TestResult>, PolicyLoadError> {
    let files = source.read()?;
    let all = SourceFiles {
        modules: files.modules.iter().chain(&files.tests).cloned().collect(),
        tests: Vec::new(),
        data: files.data.into_iter().chain(files.test_data).collect(),
        test_data: Vec::new(),
    };
    let (mut engine, _) = parse(&all, version)?;
    engine.set_gather_prints(true);

    let mut tests: Vec<(String, String)> = Vec::new();
    // `get_modules` is the parsed AST; the rule heads name the tests.
    for module in engine.get_modules() {
        let package = module.package.refr.span().text().to_string();
        let file = module.package.span.source.get_path().to_string();
        for rule in &module.policy {
            let head = rule.span().text();
            let name: String = head
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with("test_") || name.starts_with("todo_test_") {
                let path = format!("data.{package}.{name}");
                if !tests.iter().any(|(p, _)| *p == path) {
                    tests.push((path, file.clone()));
                }
            }
        }
    }

    let mut results = Vec::with_capacity(tests.len());
    for (name, file) in tests {
        if name
            .rsplit('.')
            .next()
            .is_some_and(|n| n.starts_with("todo_"))
        {
            results.push(TestResult {
                name,
                file,
                status: TestStatus::Skipped,
                duration: Duration::ZERO,
                prints: Vec::new(),
            });
            continue;
        }
        // Each test gets its own engine: regorus keeps rule values between evaluations,
        // and a value computed under one test's `with` must not leak into the next.
        let mut engine = engine.clone();
        let started = Instant::now();
        let status = match engine.eval_rule(name.clone()) {
            Ok(regorus::Value::Bool(true)) => TestStatus::Pass,
            Ok(_) => TestStatus::Fail,
            Err(err) => TestStatus::Error(one_line(&err)),
        };
        let duration = started.elapsed();
        let prints = engine.take_prints().unwrap_or_default();
        results.push(TestResult {
            name,
            file,
            status,
            duration,
            prints,
        });
    }
    Ok(results)
}
