# Who may act at all: unauthenticated requests (routes the operator configured as
# such) may only read; writes and destructive actions need a delegating human; a
# delegation chain may not exceed its depth limit.
package leash.gates

import rego.v1


deny contains "unauthenticated requests may only read" if {
	not input.leash.authenticated
	input.leash.action.class != "read"
}

deny contains sprintf("%s actions need a human on whose behalf the agent acts", [input.leash.action.class]) if {
	input.leash.authenticated
	input.leash.action.class in data.leash.lib.human_required_for
	input.leash.human == null
}

deny contains sprintf("a delegation chain of %d agents exceeds the limit of %d", [depth, limit]) if {
	depth := input.leash.delegation.depth
	limit := data.leash.lib.max_delegation_depth
	depth > limit
}
