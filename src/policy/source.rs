//! Where policy files come from: the library embedded in the binary, or a directory.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::problem::{PolicyLoadError, Problem};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_policy.rs"));
}

/// Larger files are refused before they are read: a policy or data file this big is
/// a mistake (a log, a dump) and would stall every reload.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// All files of a directory together, checked before each is read.
const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
/// Policy, test and data files below a directory.
const MAX_FILES: usize = 1000;
/// `[` and `{` nested in a Rego module. regorus's parser takes time exponential in this
/// depth (16 levels: over a second; 20: half a minute), holding the reload meanwhile.
const MAX_LITERAL_NESTING: usize = 12;
/// The parse work of deep literals across all modules, counted 2^depth for every `[`
/// and `{` opened 8 or more levels deep (shallower ones parse in linear time). About 33
/// literals 12 deep, a second or two of parsing.
const MAX_NESTING_COST: u64 = 1 << 18;
const COSTLY_DEPTH: usize = 8;
/// What a `data.yaml` may expand to through anchors and aliases, in scalar bytes plus
/// 8 per node: 2.6 KB of nested aliases can otherwise stand for 10^8 values.
const MAX_YAML_EXPANSION: usize = 64 * 1024 * 1024;

/// The shipped library as `(path below rego/, text)`: `leash` serves it by default.
pub fn embedded_files() -> &'static [(&'static str, &'static str)] {
    embedded::FILES
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The `rego/` library compiled into the binary.
    Embedded,
    /// Every `.rego` file and every `data.json`/`data.yaml` below a directory.
    Dir(PathBuf),
    /// The embedded library plus a directory that extends it.
    Layered(PathBuf),
}

/// How embedded files are named in messages, apart from the operator's own files.
const EMBEDDED_PREFIX: &str = "embedded:";

/// One text file of a policy set, named by its path relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    /// Part of the library compiled into leash, not a file of the operator's: known
    /// from where it was read, never from its name (a folder may be called anything).
    embedded: bool,
}

impl SourceFile {
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Json,
    Yaml,
}

/// A `data.json`/`data.yaml`; its folders below the root say where it lands under `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub file: SourceFile,
    pub folders: Vec<String>,
    pub format: DataFormat,
}

/// Everything a source holds, sorted by path so the same tree always loads the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFiles {
    pub modules: Vec<SourceFile>,
    /// `*_test.rego`: run by `leash test`, never served.
    pub tests: Vec<SourceFile>,
    pub data: Vec<DataFile>,
    /// `*_test.json` / `*_test.yaml`: data for `leash test` (and Rust tests that read the
    /// same cases), placed like data files, never served.
    pub test_data: Vec<DataFile>,
}

enum Kind {
    Module,
    Test,
    Data(DataFormat),
    TestData(DataFormat),
}

fn classify(name: &str) -> Option<Kind> {
    match name {
        "data.json" => Some(Kind::Data(DataFormat::Json)),
        "data.yaml" | "data.yml" => Some(Kind::Data(DataFormat::Yaml)),
        _ if name.ends_with("_test.rego") => Some(Kind::Test),
        _ if name.ends_with(".rego") => Some(Kind::Module),
        _ if name.ends_with("_test.json") => Some(Kind::TestData(DataFormat::Json)),
        _ if name.ends_with("_test.yaml") || name.ends_with("_test.yml") => {
            Some(Kind::TestData(DataFormat::Yaml))
        }
        _ => None,
    }
}

impl PolicySource {
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded => "embedded".to_owned(),
            Self::Dir(dir) => dir.display().to_string(),
            Self::Layered(dir) => format!("embedded + {}", dir.display()),
        }
    }

    fn dir(&self) -> Option<&Path> {
        match self {
            Self::Embedded => None,
            Self::Dir(dir) | Self::Layered(dir) => Some(dir),
        }
    }

    pub fn read(&self) -> Result<SourceFiles, PolicyLoadError> {
        let mut files = SourceFiles::default();
        if matches!(self, Self::Embedded | Self::Layered(_)) {
            for (path, text) in embedded::FILES {
                let file = SourceFile {
                    path: format!("{EMBEDDED_PREFIX}{path}"),
                    text: (*text).to_owned(),
                    embedded: true,
                };
                files.add(path, file);
            }
        }
        if let Some(dir) = self.dir() {
            let root = std::fs::canonicalize(dir).map_err(|e| io_problem(dir, &e))?;
            let paths = walk_root(dir)?;
            let before = files.modules.len() + files.tests.len();
            let mut total = 0u64;
            let mut nesting_cost = 0u64;
            for path in paths {
                let rel = relative(dir, &path);
                let text = read_text(&path, &root, &mut total)?;
                check_shape(&rel, &text, &mut nesting_cost)?;
                let file = SourceFile {
                    text,
                    path: rel.clone(),
                    embedded: false,
                };
                files.add(&rel, file);
            }
            if matches!(self, Self::Dir(_)) && files.modules.len() + files.tests.len() == before {
                return Err(Problem::general(
                    dir.display().to_string(),
                    "no .rego files found; point --policy at the directory holding your policy, \
                     or leave it unset to serve the embedded library",
                )
                .into());
            }
        }
        files.sort();
        Ok(files)
    }

    /// A cheap summary of the files' names, sizes and modification times: it changes
    /// when any policy or data file is added, removed or edited.
    pub fn fingerprint(&self) -> std::io::Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
        let Some(dir) = self.dir() else {
            return Ok(Vec::new());
        };
        let mut paths = walk_root(dir).map_err(|e| std::io::Error::other(e.to_string()))?;
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path)?;
                Ok((path, meta.len(), meta.modified().ok()))
            })
            .collect()
    }
}

impl SourceFiles {
    /// Adds `file`, found at `rel` below its source's root.
    fn add(&mut self, rel: &str, file: SourceFile) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        match classify(name) {
            Some(Kind::Module) => self.modules.push(file),
            Some(Kind::Test) => self.tests.push(file),
            Some(Kind::Data(format)) => self.data.push(DataFile::at(rel, file, format)),
            Some(Kind::TestData(format)) => {
                self.test_data.push(DataFile::at(rel, file, format));
            }
            None => {}
        }
    }

    fn sort(&mut self) {
        self.modules.sort_by(|a, b| a.path.cmp(&b.path));
        self.tests.sort_by(|a, b| a.path.cmp(&b.path));
        self.data.sort_by(|a, b| a.file.path.cmp(&b.file.path));
        self.test_data.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    }
}

impl DataFile {
    /// A data file at `rel` below its root: it lands under `data` at its folders.
    fn at(rel: &str, file: SourceFile, format: DataFormat) -> Self {
        let mut folders: Vec<String> = rel.split('/').map(str::to_owned).collect();
        folders.pop();
        Self {
            file,
            folders,
            format,
        }
    }
}

/// Collects policy and data files below `root`. Names starting with `.` are skipped:
/// that leaves editors' swap files out and reads a Kubernetes ConfigMap mount once,
/// through its top-level links, not again through its `..data` snapshot folders.
/// Symbolic links are followed only to places inside the root, each directory and file
/// at most once, so links cannot fan a small tree out into a large one.
fn walk_root(root: &Path) -> Result<Vec<PathBuf>, PolicyLoadError> {
    let real_root = std::fs::canonicalize(root).map_err(|e| io_problem(root, &e))?;
    let mut walk = Walk {
        root: real_root.clone(),
        seen: std::collections::HashSet::from([real_root]),
        out: Vec::new(),
    };
    walk.dir(root)?;
    Ok(walk.out)
}

struct Walk {
    root: PathBuf,
    seen: std::collections::HashSet<PathBuf>,
    out: Vec<PathBuf>,
}

impl Walk {
    fn dir(&mut self, dir: &Path) -> Result<(), PolicyLoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| io_problem(dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_problem(dir, &e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| io_problem(&path, &e))?;
            if !meta.is_dir() && classify(&name).is_none() {
                continue;
            }
            let real = std::fs::canonicalize(&path).map_err(|e| io_problem(&path, &e))?;
            if !real.starts_with(&self.root) {
                return Err(Problem::general(
                    path.display().to_string(),
                    format!(
                        "a link to {}, outside the policy directory; copy what it points to into the directory",
                        real.display()
                    ),
                )
                .into());
            }
            if !self.seen.insert(real) {
                return Err(Problem::general(
                    path.display().to_string(),
                    "reached a second time through a symbolic link; link each file and folder once",
                )
                .into());
            }
            if meta.is_dir() {
                self.dir(&path)?;
            } else {
                self.out.push(path);
                if self.out.len() > MAX_FILES {
                    return Err(Problem::general(
                        self.root.display().to_string(),
                        format!("more than {MAX_FILES} policy and data files; split the policy or remove what is not served"),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// What makes a file cost far more to load than its size, refused before parsing.
fn check_shape(rel: &str, text: &str, nesting_cost: &mut u64) -> Result<(), PolicyLoadError> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    match classify(name) {
        Some(Kind::Module | Kind::Test) => {
            if let Some((line, column)) = nesting_exceeds(text, MAX_LITERAL_NESTING, nesting_cost) {
                return Err(Problem {
                    file: rel.to_owned(),
                    line,
                    column,
                    message: format!(
                        "arrays and objects nest more than {MAX_LITERAL_NESTING} deep; name the inner parts as rules"
                    ),
                }
                .into());
            }
            if *nesting_cost > MAX_NESTING_COST {
                return Err(Problem::general(
                    rel.to_owned(),
                    "with this file, the modules hold too many deeply nested arrays and objects to parse in reasonable time; name the inner parts as rules",
                )
                .into());
            }
        }
        Some(Kind::Data(DataFormat::Yaml) | Kind::TestData(DataFormat::Yaml)) => {
            yaml_expansion_within(text, MAX_YAML_EXPANSION)
                .map_err(|why| PolicyLoadError::from(Problem::general(rel.to_owned(), why)))?;
        }
        _ => {}
    }
    Ok(())
}

/// Where (1-based line and column) `[` and `{` outside strings and comments first
/// nest deeper than `limit`; adds their parse work to `cost`.
fn nesting_exceeds(text: &str, limit: usize, cost: &mut u64) -> Option<(u32, u32)> {
    let mut depth = 0usize;
    let mut line = 1u32;
    let mut line_start = 0usize;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\n' => {
                line += 1;
                line_start = at + 1;
            }
            '#' => {
                if let Some((at, _)) = chars.by_ref().find(|(_, c)| *c == '\n') {
                    line += 1;
                    line_start = at + 1;
                }
            }
            '"' => {
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            line_start = at + 1;
                            break;
                        }
                        _ => {}
                    }
                }
            }
            '`' => {
                for (at, c) in chars.by_ref() {
                    match c {
                        '`' => break,
                        '\n' => {
                            line += 1;
                            line_start = at + 1;
                        }
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth >= COSTLY_DEPTH {
                    *cost = cost.saturating_add(1 << depth.min(62));
                }
                if depth > limit {
                    let column = text.get(line_start..at).map_or(0, |s| s.chars().count());
                    return Some((line, u32::try_from(column + 1).unwrap_or(u32::MAX)));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Walks `text` as YAML, aliases expanded, and stops once it stands for more than
/// `budget` (scalar bytes plus 8 per node). Syntax errors are left to the parser that
/// reads the file next, which reports them with their line.
fn yaml_expansion_within(text: &str, budget: usize) -> Result<(), String> {
    use serde::de::DeserializeSeed as _;
    let left = std::cell::Cell::new(budget);
    for document in yaml_serde::Deserializer::from_str(text) {
        if let Err(err) = (Expansion { left: &left }).deserialize(document) {
            let err = err.to_string();
            if left.get() == 0 || err.contains("repetition limit") {
                return Err(format!(
                    "the document expands past {MAX_YAML_EXPANSION} bytes or repeats its aliases too often; write the values out or split the file"
                ));
            }
            // A syntax error carries its place; the parser that reads the file next
            // reports it with the others. Anything else fails closed here.
            if err.contains(" at line ") {
                return Ok(());
            }
            return Err(format!("cannot be measured before loading: {err}"));
        }
    }
    Ok(())
}

/// A serde visitor that builds nothing and counts what it is shown.
#[derive(Clone, Copy)]
struct Expansion<'a> {
    left: &'a std::cell::Cell<usize>,
}

impl Expansion<'_> {
    fn spend<E: serde::de::Error>(self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n + 8) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(E::custom("over the expansion budget"))
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Expansion<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Expansion<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.spend(1)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.spend(8)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.spend(8)
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<(), E> {
        self.spend(16)
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<(), E> {
        self.spend(16)
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.spend(8)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.spend(v.len())
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.spend(v.len())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        // A tagged value (`!tag value`): its value counts like any other.
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads one file below `root`, counting it into `total` for the directory's limit.
/// The file is opened once and everything is checked on what was opened: a regular
/// file (a FIFO would block the reload forever), still inside the root (a link swapped
/// after the walk cannot pull in a file from elsewhere), and read no further than the
/// limit (a file that grows after it was measured cannot swell the read).
fn read_text(path: &Path, root: &Path, total: &mut u64) -> Result<String, PolicyLoadError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let refuse = |why: String| -> PolicyLoadError {
        Problem::general(path.display().to_string(), why).into()
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading must not wait for a writer.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_problem(path, &e))?;
    let meta = file.metadata().map_err(|e| io_problem(path, &e))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".to_owned()));
    }
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| io_problem(path, &e))?;
    if !opened.starts_with(root) {
        return Err(refuse(format!(
            "opened as {}, outside the policy directory",
            opened.display()
        )));
    }
    let len = meta.len();
    if len > MAX_FILE_BYTES {
        return Err(refuse(format!(
            "file is {len} bytes, more than the {MAX_FILE_BYTES}-byte limit"
        )));
    }
    *total += len;
    if *total > MAX_TOTAL_BYTES {
        return Err(refuse(format!(
            "the policy directory holds more than {MAX_TOTAL_BYTES} bytes of policy and data with this file"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_problem(path, &e))?;
    if bytes.len() as u64 != len {
        return Err(refuse(
            "the file changed while it was read; leash reads it again on the next reload"
                .to_owned(),
        ));
    }
    String::from_utf8(bytes).map_err(|_| refuse("file is not valid UTF-8".to_owned()))
}

fn io_problem(path: &Path, err: &std::io::Error) -> PolicyLoadError {
    Problem::general(path.display().to_string(), format!("cannot read: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_measured_as_it_expands_not_as_it_is_written() {
        // Few aliases over a long list: within the parser's repetition limit, yet
        // 10,000 copies of the list.
        let mut yaml = format!("l0: &l0 [{}]\n", vec!["aaaaaaaaaa"; 500].join(", "));
        for level in 1..=4 {
            let prev = level - 1;
            yaml.push_str(&format!(
                "l{level}: &l{level} [{}]\n",
                vec![format!("*l{prev}"); 10].join(", ")
            ));
        }
        let err = yaml_expansion_within(&yaml, 1 << 20).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        // A number past 64 bits is a value like any other, not a reason to stop looking.
        let err = yaml_expansion_within(&format!("n: 18446744073709551616\n{yaml}"), 1 << 20)
            .unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        assert!(yaml_expansion_within("a: [1, 2]\nb: {c: d}\n", 1 << 20).is_ok());
        // A syntax error is the parser's to report, with its line.
        assert!(yaml_expansion_within("a: [1, 2\n", 1 << 20).is_ok());
    }

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting_exceeds("x := [[[1]]]", 3, &mut 0), None);
        assert_eq!(nesting_exceeds("x := [[[[1]]]]", 3, &mut 0), Some((1, 9)));
        assert_eq!(
            nesting_exceeds("# [[[[\nx := \"[[[[\"\ny := `\n[[[[`", 3, &mut 0),
            None
        );
        assert_eq!(
            nesting_exceeds("a := 1\n\n  b := {{{{", 3, &mut 0),
            Some((3, 11))
        );
        // Deep literals within the limit add up across modules.
        let twelve = format!("x := {}1{}\n", "[".repeat(12), "]".repeat(12));
        let mut cost = 0;
        assert_eq!(nesting_exceeds(&twelve.repeat(40), 12, &mut cost), None);
        assert!(cost > MAX_NESTING_COST, "{cost}");
        let mut shallow = 0;
        nesting_exceeds(&"x := [[[[1]]]]\n".repeat(10_000), 12, &mut shallow);
        assert_eq!(
            shallow, 0,
            "shallow literals parse in linear time and cost nothing"
        );
    }
}
