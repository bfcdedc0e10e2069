# leash's default decision: a request passes only when no gate in data.leash.gates
# denies it. Each gate adds a reason to `deny`; the reasons reach the client (JSON
# body), the decision log (`reason`) and Envoy's metadata.
#
# Extend it without editing these files: serve with `--library embedded --policy DIR`
# and put more `deny contains "..." if { ... }` rules in package leash.gates, and
# settings, grants and the tool table under data.leash in DIR.
package envoy.authz

import rego.v1


default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reasons\":[\"no decision\"]}",
	"reason": "no decision",
}

allow := {
	"allowed": true,
	"headers": data.leash.lib.upstream_headers,
	"dynamic_metadata": {"leash_action": input.leash.action.class},
} if count(data.leash.gates.deny) == 0

allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "forbidden", "reasons": reasons}),
	"reason": concat("; ", reasons),
	"dynamic_metadata": {"leash_action": input.leash.action.class},
} if {
	count(data.leash.gates.deny) > 0
	reasons := sort(data.leash.gates.deny)
}
