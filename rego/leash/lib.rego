# Helpers the gates share: settings with their defaults, the resource acted on, and
# grants from the token or from data.
package leash.lib

import rego.v1

# Settings, each overridable in data.leash.settings. Each has a default so that a
# missing setting can never leave a gate undefined, and so silently open.

# An agent acting through more agents than this is refused.
default max_delegation_depth := 2

max_delegation_depth := data.leash.settings.max_delegation_depth

# Action classes that need a human on whose behalf the agent acts.
default human_required_for := ["write", "destructive"]

human_required_for := data.leash.settings.human_required_for

# Tools missing from the operator's tool table are refused unless this is true.
default allow_unknown_tools := false

allow_unknown_tools := data.leash.settings.allow_unknown_tools

# How much each class may do; a scope for a class covers the classes below it.
levels := {"read": 1, "write": 2, "destructive": 3}

# What the request acts on: the MCP tool, else the operator rule that classified
# it, else the host (without its port).
resource := input.leash.tool.name if input.leash.tool != null

resource := trim_prefix(input.leash.action.source, "rule:") if {
	input.leash.tool == null
	startswith(input.leash.action.source, "rule:")
}

resource := regex.replace(input.attributes.request.http.host, `:[0-9]+$`, "") if {
	input.leash.tool == null
	not startswith(input.leash.action.source, "rule:")
}

# `tool:<resource>:<class>` (or `tool:*:<class>`) covers the action's class and below.
scope_covers(class) if {
	some scope in input.leash.scopes
	startswith(scope, "tool:")
	parts := split(substring(scope, 5, -1), ":")
	count(parts) >= 2
	concat(":", array.slice(parts, 0, count(parts) - 1)) in {resource, "*"}
	levels[parts[count(parts) - 1]] >= levels[class]
}

# An explicit grant of `kind` (destructive, export, privilege) for the resource:
# a scope `<kind>:<resource>`, an RFC 9396 authorization_details entry of type
# "leash" listing the kind in `actions`, or data.leash.grants[task][kind].
granted(kind) if {
	some scope in input.leash.scopes
	scope in {sprintf("%s:%s", [kind, resource]), sprintf("%s:*", [kind])}
}

granted(kind) if {
	some detail in authorization_details
	detail.type == "leash"
	kind in detail.actions
	object.get(detail, "identifier", "*") in {resource, "*"}
}

granted(kind) if {
	some entry in data.leash.grants[input.leash.task][kind]
	entry in {resource, "*"}
}

# The token's RFC 9396 details, or none.
authorization_details := details if {
	details := input.leash.authorization_details
	is_array(details)
} else := []

# Who acts, for the tool behind Envoy; absent values are left out.
upstream_headers := {name: value |
	some name, value in {
		"x-leash-agent": input.leash.agent,
		"x-leash-human": input.leash.human,
		"x-leash-task": input.leash.task,
	}
	value != null
}
