//! Parts of a compact JWS (`header.payload.signature`), decoded. A leaf shared by token
//! verification and OPA's `io.jwt.*` builtins, so neither depends on the other.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value as Json};

/// A base64url part holding a JSON object; `what` names the part in the error.
pub(crate) fn json_part(part: &str, what: &str) -> Result<Map<String, Json>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("the {what} is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Json::Object(map)) => Ok(map),
        _ => Err(format!("the {what} is not a JSON object")),
    }
}
