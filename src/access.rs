//! Who may use the control API: callers that present a bearer token read from a file,
//! or a client certificate whose identity is listed, each with a role. Protocol-free:
//! the edge reads the `authorization` header and the verified certificate, and asks.
//!
//! With no token configured, leash writes a random admin token to a file only its user
//! can read, once, and keeps using it: `serve` needs no setup and nothing on the host
//! can change leash's state without reading that file. The token itself is never
//! logged; only digests are kept in memory.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What a caller may do. An `admin` may do everything; an `operator` or an `approver`
/// may also read what a `viewer` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "approver" => Some(Self::Approver),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// Whether a caller with this role may do what `needed` may.
    pub fn covers(self, needed: Role) -> bool {
        self == needed || self == Self::Admin || needed == Self::Viewer
    }
}

/// A bearer token file and the role it grants, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    /// Names the caller in the log.
    pub name: String,
    pub file: PathBuf,
    pub role: Role,
}

/// A caller leash knows: a name, a role and the digest of its token.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// A client certificate identity allowed to call, and its role, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertClient {
    pub name: String,
    pub identity: Identity,
    pub role: Role,
}

/// What a listed client's certificate must name, exactly: a URI SAN (a SPIFFE ID,
/// compared byte for byte) or a DNS SAN (compared in any case). Never a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Uri(String),
    Dns(String),
}

impl Identity {
    /// `scheme://rest` is a URI, a dotted name of letters, digits and hyphens a DNS
    /// name; anything else (a wildcard, whitespace, an empty part) is neither.
    pub fn parse(text: &str) -> Option<Self> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'%')
        };
        if let Some((scheme, rest)) = text.split_once("://") {
            let scheme_ok = scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            return (scheme_ok && plain(rest)).then(|| Self::Uri(text.to_owned()));
        }
        let dns = text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        dns.then(|| Self::Dns(text.to_ascii_lowercase()))
    }
}

/// What a client certificate, verified against the control port's client CA and
/// issued for client authentication, names: its URI and DNS subject alternative
/// names. Never its subject's common name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
}

impl ClientIdentity {
    fn names(&self, client: &CertClient) -> bool {
        match &client.identity {
            Identity::Uri(uri) => self.uris.contains(uri),
            Identity::Dns(name) => self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name)),
        }
    }

    /// The names, quoted and escaped: they come from a certificate, and must not
    /// forge a log line.
    fn describe(&self) -> String {
        let all: Vec<String> = self
            .uris
            .iter()
            .chain(&self.dns_names)
            .map(|n| format!("{n:?}"))
            .collect();
        if all.is_empty() {
            "no URI or DNS name".to_owned()
        } else {
            all.join(", ")
        }
    }
}

/// Who a call is from, once known, and what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted<'a> {
    pub name: &'a str,
    pub role: Role,
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the bearer token is not one leash knows")]
    Unknown,
    #[error(
        "the client certificate names {names}, which control.clients does not list, and \
         no bearer token was sent"
    )]
    Unlisted { names: String },
    #[error("the client certificate names more than one of control.clients ({first}, {second})")]
    Ambiguous { first: String, second: String },
    #[error("{caller} has the role {role}, and this needs {needed}")]
    Forbidden {
        caller: String,
        role: &'static str,
        needed: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("control token file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "control tokens {first} and {second} share a name or a token: each caller needs its own"
    )]
    Duplicate { first: String, second: String },
    #[error(
        "the control API needs a credential and no folder for one is known (neither \
         XDG_RUNTIME_DIR nor HOME is set): set control.admin_token_file, or list control.tokens"
    )]
    NoCredential,
}

/// Tokens shorter than this are refused when read: a guessable token is no lock.
const MIN_TOKEN_BYTES: usize = 32;

/// The callers of the control API.
#[derive(Debug, Clone)]
pub struct Access {
    callers: Vec<Caller>,
    clients: Vec<CertClient>,
}

impl Access {
    /// Reads every configured token file; with neither tokens nor certificate clients
    /// configured, reads the admin token at `admin_file`, writing a new one there first
    /// if there is none.
    pub fn load(
        configured: &[TokenFile],
        clients: &[CertClient],
        admin_file: Option<&Path>,
    ) -> Result<Self, AccessError> {
        let mut callers = Vec::with_capacity(configured.len().max(1));
        for entry in configured {
            callers.push(Caller {
                name: entry.name.clone(),
                role: entry.role,
                digest: digest(&read_token(&entry.file, Owner::LeashOrRoot)?),
            });
        }
        for (i, caller) in callers.iter().enumerate() {
            if let Some(twin) = callers.get(..i).and_then(|before| {
                before
                    .iter()
                    .find(|c| c.name == caller.name || c.digest == caller.digest)
            }) {
                return Err(AccessError::Duplicate {
                    first: twin.name.clone(),
                    second: caller.name.clone(),
                });
            }
        }
        if callers.is_empty() && clients.is_empty() {
            let admin_file = admin_file.ok_or(AccessError::NoCredential)?;
            let created = ensure_admin_token(admin_file)?;
            if created {
                tracing::warn!(
                    path = %admin_file.display(),
                    "no control token configured: wrote a new admin token for the control API \
                     to this file (readable by this user only); `control.tokens` configures others"
                );
            } else {
                tracing::info!(path = %admin_file.display(), "control API admin token read from this file");
            }
            callers.push(Caller {
                name: "admin".to_owned(),
                role: Role::Admin,
                digest: digest(&read_token(admin_file, Owner::Leash)?),
            });
        }
        Ok(Self {
            callers,
            clients: clients.to_vec(),
        })
    }

    /// The caller a verified client certificate or else an `authorization` header value
    /// names, if it may do what `needed` may. A listed certificate names the caller
    /// whatever token comes with it.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        certificate: Option<&ClientIdentity>,
        needed: Role,
    ) -> Result<Granted<'_>, Refusal> {
        let by_certificate = match certificate {
            Some(identity) => self.client(identity)?,
            None => None,
        };
        let granted = match by_certificate {
            Some(client) => Granted {
                name: &client.name,
                role: client.role,
            },
            None => match (self.bearer(authorization), certificate) {
                (Err(Refusal::Missing), Some(identity)) => {
                    return Err(Refusal::Unlisted {
                        names: identity.describe(),
                    });
                }
                (found, _) => found?,
            },
        };
        if granted.role.covers(needed) {
            Ok(granted)
        } else {
            Err(Refusal::Forbidden {
                caller: granted.name.to_owned(),
                role: granted.role.name(),
                needed: needed.name(),
            })
        }
    }

    /// The one listed client `identity` names, if any; naming two is refused rather
    /// than resolved by order.
    fn client(&self, identity: &ClientIdentity) -> Result<Option<&CertClient>, Refusal> {
        let mut named = self.clients.iter().filter(|c| identity.names(c));
        match (named.next(), named.next()) {
            (Some(first), Some(second)) => Err(Refusal::Ambiguous {
                first: first.name.clone(),
                second: second.name.clone(),
            }),
            (first, _) => Ok(first),
        }
    }

    fn bearer(&self, authorization: Option<&str>) -> Result<Granted<'_>, Refusal> {
        let token = authorization
            .and_then(|h| {
                h.get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| h.get(7..).unwrap_or_default().trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        let presented = digest(token);
        // Every digest is compared, in constant time, whichever matches.
        let mut found = None;
        for caller in &self.callers {
            let same =
                aws_lc_rs::constant_time::verify_slices_are_equal(&caller.digest, &presented)
                    .is_ok();
            if same && found.is_none() {
                found = Some(caller);
            }
        }
        let caller = found.ok_or(Refusal::Unknown)?;
        Ok(Granted {
            name: &caller.name,
            role: caller.role,
        })
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn file_error(path: &Path, message: impl Into<String>) -> AccessError {
    AccessError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Who may own a token file.
#[derive(Clone, Copy)]
enum Owner {
    /// The file leash writes itself: leash's user, readable by no one else, and never
    /// reached through a link.
    Leash,
    /// A file the operator names (a mounted Secret is a link, owned by root): leash's
    /// user or root, writable by no one else and readable by no one but its group.
    LeashOrRoot,
}

/// The most a token file may hold; a larger one is not a token file.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// A token file's one token, read from the file that was opened and checked: not a
/// link (for leash's own file), a regular file, owned and open to others only as
/// `owner` says. Another user cannot plant
/// a file leash would accept, nor swap one in between the check and the read.
fn read_token(path: &Path, owner: Owner) -> Result<String, AccessError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    let nofollow = match owner {
        Owner::Leash => libc::O_NOFOLLOW,
        Owner::LeashOrRoot => 0,
    };
    // Non-blocking, so a FIFO planted at the path cannot hang the start.
    options.custom_flags(nofollow | libc::O_NONBLOCK | libc::O_CLOEXEC);
    let file = options
        .open(path)
        .map_err(|e| file_error(path, format!("{e} (a link is not followed here)")))?;
    let meta = file
        .metadata()
        .map_err(|e| file_error(path, e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(file_error(path, "is not a regular file"));
    }
    let me = effective_uid().map_err(|e| file_error(path, e))?;
    let owned = match owner {
        Owner::Leash => meta.uid() == me,
        Owner::LeashOrRoot => meta.uid() == me || meta.uid() == 0,
    };
    if !owned {
        return Err(file_error(
            path,
            format!("is owned by user {}, not by leash's user {me}", meta.uid()),
        ));
    }
    let others = match owner {
        Owner::Leash => 0o077,
        // A Secret mounted for a non-root leash is group-readable (fsGroup).
        Owner::LeashOrRoot => 0o027,
    };
    if meta.mode() & others != 0 {
        return Err(file_error(
            path,
            format!(
                "is open to others (mode {:o}); chmod 600 it",
                meta.mode() & 0o777
            ),
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(file_error(path, "is larger than a token file"));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_TOKEN_FILE_BYTES),
        &mut text,
    )
    .map_err(|e| file_error(path, e.to_string()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_BYTES || token.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(file_error(
            path,
            format!("must hold one token of at least {MIN_TOKEN_BYTES} characters and no spaces"),
        ));
    }
    Ok(token.to_owned())
}

/// The user leash runs as: the owner of its own `/proc` entry.
fn effective_uid() -> Result<u32, String> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell which user leash runs as (/proc/self: {e})"))
}

/// Writes a random admin token to `path` unless a file is there; says whether it wrote.
/// Folders it creates are private to this user, and the file appears whole or not at
/// all: it is written beside the path, then linked into place.
fn ensure_admin_token(path: &Path) -> Result<bool, AccessError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| file_error(path, e.to_string()))?;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| file_error(path, "the system's random source failed"))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix)
        .map_err(|_| file_error(path, "the system's random source failed"))?;
    let staged = dir.join(format!(".control-token-{}", URL_SAFE_NO_PAD.encode(suffix)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&staged)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()?;
        // Fails if a file appeared at the path meanwhile: that one is checked on read.
        std::fs::hard_link(&staged, path)
    })();
    let _ = std::fs::remove_file(&staged);
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(file_error(path, e.to_string())),
    }
}

/// Where the admin token lives when `control.admin_token_file` is not set: the user's
/// runtime folder, else their state folder. `None` when neither is known.
pub fn default_admin_token_file() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_RUNTIME_DIR")
        .map(|dir| dir.join("leash"))
        .or_else(|| from("HOME").map(|home| home.join(".local/state/leash")))
        .map(|dir| dir.join("control.token"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn callers_are_known_by_token_and_held_to_their_role() {
        let dir = tempfile::tempdir().unwrap();
        let viewer = "v".repeat(40);
        let operator = "o".repeat(40);
        let access = Access::load(
            &[
                TokenFile {
                    name: "dash".into(),
                    file: write(dir.path(), "v", &format!("{viewer}\n"), 0o600),
                    role: Role::Viewer,
                },
                TokenFile {
                    name: "ops".into(),
                    file: write(dir.path(), "o", &operator, 0o400),
                    role: Role::Operator,
                },
            ],
            &[],
            Some(&dir.path().join("unused")),
        )
        .unwrap();
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            access
                .authorize(Some(&bearer(&viewer)), None, Role::Viewer)
                .unwrap()
                .name,
            "dash"
        );
        assert!(matches!(
            access.authorize(Some(&bearer(&viewer)), None, Role::Operator),
            Err(Refusal::Forbidden { .. })
        ));
        assert_eq!(
            access
                .authorize(Some(&format!("bearer {operator}")), None, Role::Operator)
                .unwrap()
                .name,
            "ops"
        );
        assert_eq!(
            access
                .authorize(Some(&bearer(&operator)), None, Role::Approver)
                .err()
                .map(|e| matches!(e, Refusal::Forbidden { .. })),
            Some(true)
        );
        assert_eq!(
            access.authorize(None, None, Role::Viewer).err(),
            Some(Refusal::Missing)
        );
        assert_eq!(
            access.authorize(Some("Bearer "), None, Role::Viewer).err(),
            Some(Refusal::Missing)
        );
        assert_eq!(
            access.authorize(Some(&viewer), None, Role::Viewer).err(),
            Some(Refusal::Missing)
        );
        assert_eq!(
            access
                .authorize(Some(&bearer(&"x".repeat(40))), None, Role::Viewer)
                .err(),
            Some(Refusal::Unknown)
        );
        assert!(
            !dir.path().join("unused").exists(),
            "no admin token when tokens are configured"
        );
    }

    #[test]
    fn token_files_others_can_read_or_short_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, mode) in [
            ("open", "t".repeat(40), 0o644),
            ("short", "t".repeat(8), 0o600),
            (
                "spaced",
                format!("{} {}", "a".repeat(20), "b".repeat(20)),
                0o600,
            ),
        ] {
            let file = write(dir.path(), name, &text, mode);
            let configured = [TokenFile {
                name: name.into(),
                file,
                role: Role::Admin,
            }];
            assert!(
                Access::load(&configured, &[], Some(Path::new("/unused"))).is_err(),
                "{name}"
            );
        }
    }

    /// What another user could plant at the admin token's path: a link to a token of
    /// theirs, a FIFO to hang the start, a file too large to be a token. None is read.
    #[test]
    fn planted_admin_token_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = write(dir.path(), "theirs", &"a".repeat(43), 0o600);
        let link = dir.path().join("link.token");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        let err = Access::load(&[], &[], Some(&link)).unwrap_err().to_string();
        assert!(err.contains("link"), "{err}");

        let fifo = dir.path().join("fifo.token");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = Access::load(&[], &[], Some(&fifo)).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let big = write(dir.path(), "big.token", &"a".repeat(10_000), 0o600);
        assert!(Access::load(&[], &[], Some(&big)).is_err());
        // The operator's own file may be a link (a mounted Secret is one).
        let configured = [TokenFile {
            name: "secret".into(),
            file: link,
            role: Role::Viewer,
        }];
        assert!(Access::load(&configured, &[], None).is_ok());
    }

    #[test]
    fn two_callers_with_one_name_or_one_token_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &"a".repeat(43), 0o600);
        let b = write(dir.path(), "b", &"a".repeat(43), 0o600);
        let entry = |name: &str, file: &PathBuf| TokenFile {
            name: name.into(),
            file: file.clone(),
            role: Role::Viewer,
        };
        assert!(Access::load(&[entry("x", &a), entry("y", &b)], &[], None).is_err());
        let c = write(dir.path(), "c", &"c".repeat(43), 0o600);
        assert!(Access::load(&[entry("x", &a), entry("x", &c)], &[], None).is_err());
        assert!(Access::load(&[entry("x", &a), entry("y", &c)], &[], None).is_ok());
    }

    #[test]
    fn with_no_token_configured_an_admin_token_is_written_once_for_this_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/leash/control.token");
        let first = Access::load(&[], &[], Some(&path)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let token = std::fs::read_to_string(&path).unwrap();
        let header = format!("Bearer {}", token.trim());
        assert_eq!(
            first
                .authorize(Some(&header), None, Role::Admin)
                .unwrap()
                .name,
            "admin"
        );
        // A restart reads the same token: `leash ctl` keeps working.
        let again = Access::load(&[], &[], Some(&path)).unwrap();
        assert!(again.authorize(Some(&header), None, Role::Operator).is_ok());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    }

    #[test]
    fn a_listed_client_certificate_names_its_caller_and_an_unlisted_one_needs_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = "t".repeat(40);
        let bearer = format!("Bearer {token}");
        let clients = [
            CertClient {
                name: "console".into(),
                identity: Identity::parse("spiffe://corp/ns/sec/sa/console").unwrap(),
                role: Role::Approver,
            },
            CertClient {
                name: "ops".into(),
                identity: Identity::parse("ops.corp.internal").unwrap(),
                role: Role::Operator,
            },
        ];
        let dash = TokenFile {
            name: "dash".into(),
            file: write(dir.path(), "t", &token, 0o600),
            role: Role::Viewer,
        };
        let access = Access::load(&[dash], &clients, None).unwrap();
        let id = |uris: &[&str], dns: &[&str]| ClientIdentity {
            uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
        };
        let console = id(&["spiffe://corp/ns/sec/sa/console"], &[]);
        let name = |granted: Result<Granted<'_>, Refusal>| granted.map(|g| g.name.to_owned());

        assert_eq!(
            name(access.authorize(None, Some(&console), Role::Approver)),
            Ok("console".into())
        );
        assert!(matches!(
            access.authorize(None, Some(&console), Role::Operator),
            Err(Refusal::Forbidden { .. })
        ));
        // A listed certificate names the caller, whatever token comes with it.
        assert_eq!(
            name(access.authorize(Some(&bearer), Some(&console), Role::Viewer)),
            Ok("console".into())
        );
        // DNS names match in any case; a URI never matches a DNS name, nor the reverse.
        assert_eq!(
            name(access.authorize(None, Some(&id(&[], &["OPS.corp.internal"])), Role::Operator)),
            Ok("ops".into())
        );
        let crossed = id(&["ops.corp.internal"], &["spiffe://corp/ns/sec/sa/console"]);
        assert!(matches!(
            access.authorize(None, Some(&crossed), Role::Viewer),
            Err(Refusal::Unlisted { .. })
        ));
        // A longer or shorter name is another name.
        let near = id(
            &["spiffe://corp/ns/sec/sa/console/x"],
            &["x.ops.corp.internal", "ops.corp"],
        );
        assert!(matches!(
            access.authorize(None, Some(&near), Role::Viewer),
            Err(Refusal::Unlisted { .. })
        ));
        // An unlisted certificate leaves it to the bearer token.
        let other = id(&["spiffe://corp/ns/x/sa/y"], &[]);
        assert_eq!(
            name(access.authorize(Some(&bearer), Some(&other), Role::Viewer)),
            Ok("dash".into())
        );
        assert_eq!(
            access
                .authorize(
                    Some(&format!("Bearer {}", "u".repeat(40))),
                    Some(&other),
                    Role::Viewer
                )
                .err(),
            Some(Refusal::Unknown)
        );
        // A certificate naming two listed clients is refused, not settled by order.
        let both = id(&["spiffe://corp/ns/sec/sa/console"], &["ops.corp.internal"]);
        assert!(matches!(
            access.authorize(Some(&bearer), Some(&both), Role::Viewer),
            Err(Refusal::Ambiguous { .. })
        ));
    }

    #[test]
    fn with_certificate_clients_listed_no_admin_token_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leash/control.token");
        let clients = [CertClient {
            name: "console".into(),
            identity: Identity::parse("spiffe://corp/console").unwrap(),
            role: Role::Admin,
        }];
        let access = Access::load(&[], &clients, Some(&path)).unwrap();
        assert!(!path.exists());
        assert_eq!(
            access
                .authorize(Some("Bearer anything"), None, Role::Viewer)
                .err(),
            Some(Refusal::Unknown)
        );
    }

    #[test]
    fn identities_are_exact_uris_or_dns_names() {
        use Identity::{Dns, Uri};
        let parsed = |t: &str| Identity::parse(t);
        assert_eq!(
            parsed("spiffe://corp/ns/a/sa/b"),
            Some(Uri("spiffe://corp/ns/a/sa/b".into()))
        );
        assert_eq!(
            parsed("Console.Sec.svc"),
            Some(Dns("console.sec.svc".into()))
        );
        for bad in [
            "",
            "*.corp",
            "spiffe://corp/*",
            "spiffe://",
            "://x",
            "1x://y",
            "a b",
            "spiffe://corp/a b",
            "spiffe://corp/%2e",
            "a..b",
            "a.",
            "-\n",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        let forged = ClientIdentity {
            uris: vec!["spiffe://x\nINFO forged".into()],
            dns_names: vec![],
        };
        assert!(!forged.describe().contains('\n'));
    }
}
