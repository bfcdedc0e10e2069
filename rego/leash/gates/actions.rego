# What may be done: the token's scopes must cover the action; destructive actions,
# exports and privilege changes each need an explicit grant; unknown tools, and
# requests whose body leash could not read, are refused.
package leash.gates

import rego.v1


deny contains sprintf("scope tool:%s:%s is required", [data.leash.lib.resource, input.leash.action.class]) if {
	input.leash.authenticated
	not data.leash.lib.scope_covers(input.leash.action.class)
}

deny contains sprintf("destructive action on %s needs an explicit grant", [data.leash.lib.resource]) if {
	input.leash.action.class == "destructive"
	not data.leash.lib.granted("destructive")
}

deny contains sprintf("export from %s needs an export grant", [data.leash.lib.resource]) if {
	"export" in input.leash.action.tags
	not data.leash.lib.granted("export")
}

deny contains sprintf("privilege change on %s needs a privilege grant", [data.leash.lib.resource]) if {
	"privilege" in input.leash.action.tags
	not data.leash.lib.granted("privilege")
}

deny contains sprintf("privilege change on %s needs a human on whose behalf the agent acts", [data.leash.lib.resource]) if {
	"privilege" in input.leash.action.tags
	input.leash.human == null
}

deny contains sprintf("tool %s is not in the operator's tool table", [input.leash.tool.name]) if {
	input.leash.tool != null
	not input.leash.tool.known
	not data.leash.lib.allow_unknown_tools
}

deny contains sprintf("cannot tell what this %s request to %s does: its body was cut, is neither JSON nor a form, or is a JSON-RPC batch; name the route in an actions rule", [input.leash.action.class, data.leash.lib.resource]) if {
	"opaque_body" in input.leash.action.tags
	input.leash.action.class != "read"
}
