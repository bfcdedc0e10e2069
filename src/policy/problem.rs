//! Why a policy set was refused, as file, line, column and message.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a line.
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Problem {
    pub fn general(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// Reads regorus's diagnostics (`--> file:line:col`, a source excerpt, then
    /// `error: message`) into a problem; anything else becomes a message for `fallback_file`.
    pub fn from_regorus(fallback_file: &str, err: &dyn fmt::Display) -> Self {
        let text = format!("{err:#}");
        let location = text
            .lines()
            .find_map(|line| line.trim_start().strip_prefix("--> "))
            .and_then(parse_location);
        let message = text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        match location {
            Some((file, line, column)) => Self {
                file,
                line,
                column,
                message,
            },
            None => Self::general(fallback_file, message),
        }
    }
}

/// `path/to/file.rego:12:5`; the path itself may contain `:`.
fn parse_location(loc: &str) -> Option<(String, u32, u32)> {
    let mut parts = loc.trim().rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?.to_owned();
    Some((file, line, column))
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// A policy set that cannot serve, with every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyLoadError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl From<Problem> for PolicyLoadError {
    fn from(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_location_and_message_from_regorus_diagnostics() {
        let text = "\n--> policy/authz.rego:3:17\n  |\n3 | allow if foo(x)\n  |                 ^\nerror: could not find function foo";
        let problem = Problem::from_regorus("fallback", &text);
        assert_eq!(
            problem,
            Problem {
                file: "policy/authz.rego".into(),
                line: 3,
                column: 17,
                message: "could not find function foo".into(),
            }
        );
        assert_eq!(
            problem.to_string(),
            "policy/authz.rego:3:17: could not find function foo"
        );
    }

    #[test]
    fn unlocated_errors_name_the_fallback_file() {
        let problem = Problem::from_regorus("data.json", &"not a valid rule path");
        assert_eq!(problem.to_string(), "data.json: not a valid rule path");
    }
}
