# leash's default decision: a request passes only when every requirement of the
# governance library has positive evidence (data.leash.gates.unmet is empty) and no
# gate denies it. The reasons reach the client (JSON body), the decision log
# (`reason`) and Envoy's metadata. leash itself tells the tool who acts
# (x-leash-agent, x-leash-human, x-leash-task), from what it verified, and for
# writes and destructive calls replaces the agent's token with one minted for the
# call (settings: data.leash.settings.mint_for).
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

allow := object.union(
	{
		"allowed": true,
		"dynamic_metadata": {"leash_action": data.leash.lib.class},
	},
	credential,
) if {
	count(data.leash.gates.unmet) == 0
	count(data.leash.gates.deny) == 0
}

# Calls the library mints a credential for (data.leash.lib.mint, by class): leash
# sends it upstream in place of the agent's token, which never reaches the tool.
credential := {"mint": {}} if {
	data.leash.lib.mint
} else := {}

denial := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "forbidden", "reasons": reasons}),
	"reason": concat("; ", reasons),
} if {
	reasons := sort(data.leash.gates.deny)
	count(reasons) > 0
}

allow := denial if not approvable

# When the one thing missing is a destructive grant, a human can approve this very
# action: leash records the request and answers with where to follow it.
allow := object.union(denial, {"require_approval": {"reason": denial.reason}}) if approvable

approvable if {
	data.leash.gates.unmet == {"destructive_grant"}
	count(data.leash.gates.deny) == 1
}
