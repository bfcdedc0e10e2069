//! Compiles leash's control API and embeds the shipped policy library.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_control_api()?;
    embed_policy_library()?;
    Ok(())
}

/// A vendored protoc keeps the build free of system packages.
fn compile_control_api() -> Result<(), Box<dyn std::error::Error>> {
    // The policy library's own rerun lines would otherwise leave the proto unwatched.
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // `leash ctl --json` prints the replies as they are.
        .type_attribute(".leash.v1", "#[derive(serde::Serialize)]")
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/leash/v1/control.proto"], &["proto"])?;
    Ok(())
}

/// Writes `embedded_policy.rs`: every file below `rego/` as `(relative path, contents)`,
/// so `leash serve` runs the shipped library with no files on disk.
fn embed_policy_library() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("rego");
    println!("cargo:rerun-if-changed=rego");
    let mut files = Vec::new();
    collect(root, &mut files)?;
    files.sort();
    let mut out = String::from("pub(crate) static FILES: &[(&str, &str)] = &[\n");
    for file in &files {
        let rel = file
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        let abs = std::fs::canonicalize(file)?;
        writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            abs.to_string_lossy()
        )?;
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("embedded_policy.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            collect(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rego" | "json" | "yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    Ok(())
}
