# Helpers the gates share: settings with their defaults, the values of input.leash
# the gates read (each defined only when well formed, so a missing or garbled value
# leaves a requirement unmet instead of a deny reason unsaid), and grants.
package leash.lib

import rego.v1

# Settings, each overridable in data.leash.settings.

# An agent acting through more agents than this is refused.
default max_delegation_depth := 2

max_delegation_depth := d if {
	d := data.leash.settings.max_delegation_depth
	is_number(d)
}

# Action classes that need a human on whose behalf the agent acts.
default human_required_for := ["write", "destructive"]

human_required_for := h if {
	h := data.leash.settings.human_required_for
	is_array(h)
}

# Tools missing from the operator's tool table are refused unless this is true.
default allow_unknown_tools := false

allow_unknown_tools := a if {
	a := data.leash.settings.allow_unknown_tools
	is_boolean(a)
}

# Classes whose allowed calls carry a credential leash mints for the call alone, in
# place of the agent's token, when the call carries one: the tool then holds a
# token for this resource, class and task that expires in seconds. Reads keep the
# agent's token unless listed here; the configuration (credentials.mint) can add
# resources of any class.
default mint_for := ["write", "destructive"]

mint_for := m if {
	m := data.leash.settings.mint_for
	is_array(m)
}

# The highest live risk score (0 to 100) each class tolerates: reads more than
# writes, destructive actions least. A class the setting leaves out tolerates none.
default max_risk := {"read": 80, "write": 50, "destructive": 20}

max_risk := m if {
	m := data.leash.settings.max_risk
	is_object(m)
}

# Who or what a risk signal can be about; leash reports each in
# input.leash.context.risk, with the highest live score as `max` (0 with none).
risk_subjects := ["agent", "human", "workload", "task"]

# The highest live risk score about the request: defined only when leash reported
# every subject kind, so a missing report is no evidence of low risk.
risk_score := max(scores) if {
	scores := [score |
		some subject in risk_subjects
		score := input.leash.context.risk[subject].max
		is_number(score)
	]
	count(scores) == count(risk_subjects)
}

# How much each class may do; a scope for a class covers the classes below it.
levels := {"read": 1, "write": 2, "destructive": 3}

# Kinds of resource; a scope names one kind and never covers another.
kinds := {"tool", "resource", "prompt", "rule", "host"}

# The action's class, when it is one of the three.
class := c if {
	c := input.leash.action.class
	levels[c]
}

# The action's tags, when they are a list of strings.
tags := t if {
	t := input.leash.action.tags
	is_array(t)
	every tag in t {
		is_string(tag)
	}
}

# The resource acted on, when it is well formed. leash names it: the MCP tool,
# resource or prompt, the operator rule, or the host as Envoy's route or the
# operator's host list names it ("*" when nobody did).
resource := r if {
	r := input.leash.resource
	r.kind in kinds
	is_string(r.name)
	r.name != ""
}

resource_id := sprintf("%s:%s", [resource.kind, resource.name])

# This call gets a minted credential: it carries a verified token and its class is
# one of mint_for.
mint if {
	input.leash.authenticated == true
	class in mint_for
}

# The human on whose behalf the agent acts, when there is one.
human := h if {
	h := input.leash.human
	is_string(h)
	h != ""
}

scopes := s if {
	s := input.leash.scopes
	is_array(s)
}

# `<kind>:<name>:<class>` covers the action's class and below on that resource;
# `<kind>:*:<class>` on every resource of the kind. The name may hold colons
# (an MCP resource URI): the kind is before the first, the class after the last.
scope_covers if {
	some scope in scopes
	is_string(scope)
	parts := split(scope, ":")
	count(parts) >= 3
	parts[0] == resource.kind
	concat(":", array.slice(parts, 1, count(parts) - 1)) in {resource.name, "*"}
	levels[parts[count(parts) - 1]] >= levels[class]
}

# How a grant may name this resource: exactly, every resource of its kind, or all.
grant_names := {resource_id, sprintf("%s:*", [resource.kind]), "*"}

# An approver allowed this exact action (leash matches the task, the agent and the
# call, down to a tool's arguments), and the approval has a use left.
approved if {
	approval := input.leash.context.approval
	approval.status == "approved"
	is_number(approval.uses_left)
	approval.uses_left > 0
}

# An explicit grant of `kind` (destructive, export, privilege) for the resource: a
# scope `<kind>:<resource id>`, an RFC 9396 authorization_details entry of type
# "leash" listing the kind in `actions` and naming the resource in `identifier`
# (an entry without one grants nothing), or data.leash.grants[task][kind].
granted(kind) if {
	some scope in scopes
	is_string(scope)
	startswith(scope, concat("", [kind, ":"]))
	substring(scope, count(kind) + 1, -1) in grant_names
}

granted(kind) if {
	some detail in authorization_details
	detail.type == "leash"
	is_array(detail.actions)
	kind in detail.actions
	is_string(detail.identifier)
	detail.identifier in grant_names
}

granted(kind) if {
	task := input.leash.task
	is_string(task)
	some entry in data.leash.grants[task][kind]
	entry in grant_names
}

# The token's RFC 9396 details, or none.
authorization_details := details if {
	details := input.leash.authorization_details
	is_array(details)
} else := []
