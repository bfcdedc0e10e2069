//! Just-in-time approvals: a human allows one exact action (this agent, on this task,
//! this method on this canonical host and path, or this tool with these arguments)
//! once, or a few times, until a deadline. Modelled on the OpenID AuthZEN "Access
//! Request and Approval" profile draft: the policy asks, leash records a pending
//! request and tells the agent where to poll, an approver decides.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::policy::opa::hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// Approved, and every use spent.
    Used,
}

impl ApprovalStatus {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
        }
    }
}

/// Who asks: an approval is for this agent of this issuer, on this task, alone.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    pub issuer: &'a str,
    pub task: &'a str,
    pub agent: &'a str,
    pub human: Option<&'a str>,
}

/// Exactly what an approval allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub issuer: Arc<str>,
    pub task: Arc<str>,
    pub agent: Arc<str>,
    pub human: Option<Arc<str>>,
    /// `METHOD scheme://host:port/path?query` for an HTTP call, `tool NAME at
    /// scheme://host:port/path` for an MCP tool call.
    pub action: String,
    /// SHA-256, hex, of what the call carries: a tool call's arguments (canonical
    /// JSON), or an HTTP call's body as sent; `None` for an HTTP call without a body.
    pub arguments: Option<String>,
}

impl Binding {
    fn of(party: Party<'_>, action: String, arguments: Option<String>) -> Self {
        Self {
            issuer: Arc::from(party.issuer),
            task: Arc::from(party.task),
            agent: Arc::from(party.agent),
            human: party.human.map(Arc::from),
            action,
            arguments,
        }
    }

    /// An HTTP call: the method on the whole URL, query as sent, and its body.
    pub fn http(party: Party<'_>, method: &str, url: &str, body: &[u8]) -> Self {
        let body = (!body.is_empty()).then(|| hex(&Sha256::digest(body)));
        Self::of(party, format!("{method} {url}"), body)
    }

    /// An MCP tool call on the server at `url`, with its arguments as canonical JSON.
    pub fn tool(party: Party<'_>, tool: &str, url: &str, arguments: &str) -> Self {
        Self::of(
            party,
            format!("tool {tool} at {url}"),
            Some(hex(&Sha256::digest(arguments.as_bytes()))),
        )
    }

    /// The id of a new request for the action with `digest`, after the approval
    /// `previous` for it (decided or expired; `None` for the first): Checks that ask at
    /// once, before the first request is recorded, name the same approval, the one the
    /// updater keeps, whatever else changes meanwhile. The next request, once this one is
    /// decided or expired, gets an id of its own.
    pub fn request_id(digest: &str, previous: Option<&str>) -> String {
        let mut h = Sha256::new();
        for part in [digest, previous.unwrap_or_default()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let hash = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(hash.get(..16).unwrap_or(&[0; 16]));
        uuid::Uuid::from_bytes(bytes).to_string()
    }

    /// The binding's identity: equal digests, equal actions.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.issuer.as_bytes(),
            self.task.as_bytes(),
            self.agent.as_bytes(),
            self.action.as_bytes(),
            self.arguments.as_deref().unwrap_or_default().as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        hex(&h.finalize())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: Arc<str>,
    pub digest: Arc<str>,
    pub binding: Binding,
    /// Why the policy asked.
    pub reason: String,
    pub status: ApprovalStatus,
    pub requested_at: i64,
    /// Pending: decide by then. Approved: usable until then.
    pub expires_at: i64,
    pub uses_left: u32,
    pub decided_by: Option<String>,
    pub decided_reason: Option<String>,
}

impl Approval {
    /// Whether it allows its action at `now`.
    pub fn usable(&self, now: i64) -> bool {
        self.status == ApprovalStatus::Approved && self.uses_left > 0 && now < self.expires_at
    }

    /// Whether it still waits for an approver at `now`.
    pub fn waiting(&self, now: i64) -> bool {
        self.status == ApprovalStatus::Pending && now < self.expires_at
    }
}
