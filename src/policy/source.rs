//! Where policy files come from: the library embedded in the binary, or a directory.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::problem::{PolicyLoadError, Problem};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_policy.rs"));
}

/// Larger files are refused before they are read: a policy or data file this big is
/// a mistake (a log, a dump) and would stall every reload.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

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
            let mut paths = Vec::new();
            walk(dir, &mut paths).map_err(|e| io_problem(dir, &e))?;
            let before = files.modules.len() + files.tests.len();
            for path in paths {
                let rel = relative(dir, &path);
                let file = SourceFile {
                    text: read_text(&path)?,
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
        let mut paths = Vec::new();
        walk(dir, &mut paths)?;
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

/// Collects policy and data files below `dir`. Names starting with `.` are skipped:
/// that leaves editors' swap files out and reads a Kubernetes ConfigMap mount once,
/// through its top-level links, not again through its `..data` snapshot folders.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)?.is_dir() {
            walk(&path, out)?;
        } else if classify(&name).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn read_text(path: &Path) -> Result<String, PolicyLoadError> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_problem(path, &e))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(Problem::general(
            path.display().to_string(),
            format!("file is {len} bytes, more than the {MAX_FILE_BYTES}-byte limit"),
        )
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| io_problem(path, &e))?;
    String::from_utf8(bytes)
        .map_err(|_| Problem::general(path.display().to_string(), "file is not valid UTF-8").into())
}

fn io_problem(path: &Path, err: &std::io::Error) -> PolicyLoadError {
    Problem::general(path.display().to_string(), format!("cannot read: {err}")).into()
}
