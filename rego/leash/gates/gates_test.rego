package leash.gates_test

import rego.v1

# The library's decisions on the shared cases (rego/leash/testcases/cases_test.yaml).

cases := data.leash.testcases.cases

input_of(case) := object.union(data.leash.testcases.base, {"leash": object.get(case, "leash", {})})

decision_of(case) := decision if {
	settings := object.get(object.get(case, "data", {}), "settings", {})
	grants := object.get(object.get(case, "data", {}), "grants", {})
	decision := data.envoy.authz.allow with input as input_of(case) with data.leash.settings as settings with data.leash.grants as grants
}

reasons_of(decision) := {r | some r in json.unmarshal(decision.body).reasons}

passes(case) if {
	decision := decision_of(case)
	decision.allowed == case.allowed
	not case.reasons
}

passes(case) if {
	decision := decision_of(case)
	decision.allowed == false
	case.allowed == false
	decision.http_status == 403
	reasons_of(decision) == {r | some r in case.reasons}
}

test_every_shared_case_decides_as_written if {
	failing := [sprintf("%s: %v", [case.name, decision_of(case)]) | some case in cases; not passes(case)]
	print(failing)
	count(failing) == 0
}

test_an_allow_sets_no_identity_headers if {
	# leash sets x-leash-* itself, from what it verified; the policy sets none.
	decision := decision_of(cases[0])
	decision.allowed == true
	not decision.headers
	decision.dynamic_metadata == {"leash_action": "read"}
}

write_case := {
	"scopes": ["tool:create_issue:write"],
	"action": {"class": "write", "tags": [], "source": "tool"},
	"resource": {"kind": "tool", "name": "create_issue", "id": "tool:create_issue"},
	"tool": {"name": "create_issue", "arguments": {}, "known": true},
}

test_a_write_gets_a_minted_credential_a_read_does_not if {
	write := decision_of({"leash": write_case})
	write.allowed == true
	write.mint == {}
	read := decision_of(cases[0])
	read.allowed == true
	not read.mint
}

test_mint_for_chooses_the_classes_that_get_credentials if {
	reads := decision_of({"leash": {}, "data": {"settings": {"mint_for": ["read"]}}})
	reads.mint == {}
	none := decision_of({"leash": write_case, "data": {"settings": {"mint_for": []}}})
	none.allowed == true
	not none.mint
}

test_no_credential_without_a_verified_token if {
	anonymous := decision_of({
		"leash": {"authenticated": false, "scopes": [], "human": null, "agent": null},
		"data": {"settings": {"mint_for": ["read"]}},
	})
	anonymous.allowed == true
	not anonymous.mint
}

test_a_denial_never_asks_for_a_credential if {
	denied := decision_of({"leash": object.union(write_case, {"scopes": []})})
	denied.allowed == false
	not denied.mint
}

test_operator_gates_can_only_take_an_allow_away if {
	decision := data.envoy.authz.allow with input as input_of(cases[0]) with data.leash.gates.deny as {"the operator says no"}
	decision.allowed == false
	reasons_of(decision) == {"the operator says no"}
}

test_only_a_missing_destructive_grant_asks_for_an_approval if {
	destructive := {
		"scopes": ["tool:delete_repo:destructive"],
		"action": {"class": "destructive", "tags": [], "source": "tool"},
		"resource": {"kind": "tool", "name": "delete_repo", "id": "tool:delete_repo"},
		"tool": {"name": "delete_repo", "arguments": {}, "known": true},
	}
	asks := decision_of({"leash": destructive})
	asks.allowed == false
	asks.require_approval.reason == "destructive action on tool:delete_repo needs an explicit grant or an approval"

	# Another unmet requirement: no approval could make it pass, so none is asked for.
	unscoped := decision_of({"leash": object.union(destructive, {"scopes": []})})
	unscoped.allowed == false
	not unscoped.require_approval
}
