# What an allow needs: positive evidence for every requirement below. A request is
# allowed only when each is met; the absence of a reason to deny is never enough, so
# a missing, null or garbled value in input.leash leaves a requirement unmet.
#
# Every value a `not` reads is type-checked first: regorus's bytecode VM does not fail
# a body on `x := <undefined>`, so `not ... x ...` alone would succeed there where OPA
# and the interpreter fail the body.
#
# Operators extend the library in this package with `deny contains "..." if {...}`
# rules: they can only take an allow away.
package leash.gates

import rego.v1

requirements := {
	"shape", # input.leash as leash builds it: nothing a decision reads is missing
	"identity", # a verified, bound token; or an unauthenticated route, for reads
	"scope", # a scope covering the action on the resource
	"human", # a delegating human, for the classes that need one
	"delegation", # a delegation chain within the depth limit
	"destructive_grant", # an explicit grant for a destructive action
	"export_grant", # an explicit grant for an export
	"privilege_grant", # an explicit grant for a privilege change
	"privilege_human", # a delegating human for a privilege change
	"known_tool", # a tool from the operator's tool table
	"readable_body", # a body leash could read, or a rule that takes any
	"risk", # live risk signals within what the class tolerates
}

unmet := requirements - met

# Why, in words: one reason per unmet requirement, plus the operators' own.
deny contains reason if {
	some requirement in unmet
	reason := explain(requirement)
}

# A requirement unmet for want of a value leash always sets is told by "shape".
deny contains sprintf("requirement %s is not met", [requirement]) if {
	some requirement in unmet
	not explain(requirement)
	not "shape" in unmet
}

met contains "shape" if {
	is_boolean(input.leash.authenticated)
	is_string(data.leash.lib.class)
	is_array(data.leash.lib.tags)
	is_object(data.leash.lib.resource)
	is_number(input.leash.delegation.depth)
	is_number(data.leash.lib.risk_score)
}

explain("shape") := "input.leash is incomplete: leash builds it for every request, so this input did not come from leash"

met contains "identity" if input.leash.authenticated == true

met contains "identity" if {
	input.leash.authenticated == false
	data.leash.lib.class == "read"
}

explain("identity") := "unauthenticated requests may only read" if {
	input.leash.authenticated == false
}

explain("identity") := "leash established no identity for this request" if {
	not input.leash.authenticated == false
}

met contains "scope" if {
	input.leash.authenticated == true
	data.leash.lib.scope_covers
}

# An unauthenticated route carries no token and so no scopes; "identity" lets such
# requests read, and only read.
met contains "scope" if input.leash.authenticated == false

explain("scope") := sprintf("scope %s:%s is required", [data.leash.lib.resource_id, data.leash.lib.class]) if {
	input.leash.authenticated == true
}

met contains "human" if {
	class := data.leash.lib.class
	is_string(class)
	not class in data.leash.lib.human_required_for
}

met contains "human" if data.leash.lib.human

explain("human") := sprintf("%s actions need a human on whose behalf the agent acts", [data.leash.lib.class])

met contains "delegation" if {
	depth := input.leash.delegation.depth
	is_number(depth)
	depth <= data.leash.lib.max_delegation_depth
}

explain("delegation") := sprintf("a delegation chain of %d agents exceeds the limit of %d", [depth, limit]) if {
	depth := input.leash.delegation.depth
	is_number(depth)
	limit := data.leash.lib.max_delegation_depth
}

met contains "destructive_grant" if {
	class := data.leash.lib.class
	class != "destructive"
}

met contains "destructive_grant" if {
	data.leash.lib.class == "destructive"
	data.leash.lib.granted("destructive")
}

# A human approved this one action just in time (leash spends one use per allow).
met contains "destructive_grant" if {
	data.leash.lib.class == "destructive"
	data.leash.lib.approved
}

explain("destructive_grant") := sprintf("destructive action on %s needs an explicit grant or an approval", [data.leash.lib.resource_id])

met contains "export_grant" if {
	tags := data.leash.lib.tags
	is_array(tags)
	not "export" in tags
}

met contains "export_grant" if data.leash.lib.granted("export")

explain("export_grant") := sprintf("export from %s needs an export grant", [data.leash.lib.resource_id]) if {
	"export" in data.leash.lib.tags
}

met contains "privilege_grant" if {
	tags := data.leash.lib.tags
	is_array(tags)
	not "privilege" in tags
}

met contains "privilege_grant" if data.leash.lib.granted("privilege")

explain("privilege_grant") := sprintf("privilege change on %s needs a privilege grant", [data.leash.lib.resource_id]) if {
	"privilege" in data.leash.lib.tags
}

met contains "privilege_human" if {
	tags := data.leash.lib.tags
	is_array(tags)
	not "privilege" in tags
}

met contains "privilege_human" if data.leash.lib.human

explain("privilege_human") := sprintf("privilege change on %s needs a human on whose behalf the agent acts", [data.leash.lib.resource_id]) if {
	"privilege" in data.leash.lib.tags
}

met contains "known_tool" if {
	resource := data.leash.lib.resource
	resource.kind != "tool"
}

met contains "known_tool" if {
	data.leash.lib.resource.kind == "tool"
	input.leash.tool.known == true
	input.leash.tool.name == data.leash.lib.resource.name
}

met contains "known_tool" if {
	data.leash.lib.resource.kind == "tool"
	input.leash.tool.name == data.leash.lib.resource.name
	is_boolean(input.leash.tool.known)
	data.leash.lib.allow_unknown_tools == true
}

explain("known_tool") := sprintf("tool %s is not in the operator's tool table", [data.leash.lib.resource.name]) if {
	data.leash.lib.resource.kind == "tool"
}

# A body leash cannot read may hold what the class does not say (a tool call, a
# method override), whatever the method: reads too.
met contains "readable_body" if {
	tags := data.leash.lib.tags
	is_array(tags)
	not "opaque_body" in tags
}

explain("readable_body") := sprintf("cannot tell what this %s request to %s does: leash could not read its body; send JSON or a form, or name the route in an actions rule with allow_opaque_body", [data.leash.lib.class, data.leash.lib.resource_id]) if {
	"opaque_body" in data.leash.lib.tags
}

met contains "risk" if {
	limit := data.leash.lib.max_risk[data.leash.lib.class]
	is_number(limit)
	data.leash.lib.risk_score <= limit
}

explain("risk") := sprintf("risk score %d is above the %s limit of %d", [score, class, limit]) if {
	score := data.leash.lib.risk_score
	class := data.leash.lib.class
	limit := data.leash.lib.max_risk[class]
	is_number(limit)
	score > limit
}
