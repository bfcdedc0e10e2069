package leash.gates_test

import rego.v1


# A read through an MCP tool, by an agent acting for alice on task t-1.
base := {
	"attributes": {"request": {"http": {"method": "POST", "host": "mcp.example", "path": "/mcp", "headers": {}}}},
	"leash": {
		"authenticated": true,
		"human": "alice",
		"agent": "planner",
		"task": "t-1",
		"delegation": {"chain": ["planner"], "depth": 1, "may_act": null},
		"scopes": ["tool:search:read"],
		"authorization_details": null,
		"action": {"class": "read", "tags": [], "source": "tool"},
		"tool": {"name": "search", "arguments": {"q": "x"}, "known": true},
	},
}

request(patch) := object.union(base, {"leash": object.union(base.leash, patch)})

call(tool, class, tags, scopes) := request({
	"action": {"class": class, "tags": tags, "source": "tool"},
	"tool": {"name": tool, "arguments": {}, "known": true},
	"scopes": scopes,
})

reasons(req) := {r | some r in json.unmarshal(decision.body).reasons} if {
	decision := data.envoy.authz.allow with input as req
	decision.allowed == false
}

denied_because(req, reason) if {
	decision := data.envoy.authz.allow with input as req
	decision.allowed == false
	decision.http_status == 403
	reason in json.unmarshal(decision.body).reasons
}

allowed(req) if {
	decision := data.envoy.authz.allow with input as req
	decision.allowed == true
}

test_a_read_within_scope_passes_and_names_who_acts if {
	decision := data.envoy.authz.allow with input as base
	decision.allowed == true
	decision.headers == {"x-leash-agent": "planner", "x-leash-human": "alice", "x-leash-task": "t-1"}
}

test_no_scope_no_call if {
	denied_because(request({"scopes": []}), "scope tool:search:read is required")
}

test_a_higher_scope_covers_lower_classes if {
	allowed(request({"scopes": ["tool:search:write"]}))
	allowed(request({"scopes": ["tool:*:read"]}))
}

test_a_read_scope_does_not_cover_a_write if {
	denied_because(call("crm_update", "write", [], ["tool:crm_update:read"]), "scope tool:crm_update:write is required")
	allowed(call("crm_update", "write", [], ["tool:crm_update:write"]))
}

test_a_write_needs_a_delegating_human if {
	req := object.union(call("crm_update", "write", [], ["tool:crm_update:write"]), {"leash": {"human": null}})
	denied_because(req, "write actions need a human on whose behalf the agent acts")
}

test_destructive_needs_an_explicit_grant if {
	scopes := ["tool:delete_repo:destructive"]
	denied_because(call("delete_repo", "destructive", [], scopes), "destructive action on delete_repo needs an explicit grant")

	# In the token, as an RFC 9396 authorization detail...
	with_detail := object.union(
		call("delete_repo", "destructive", [], scopes),
		{"leash": {"authorization_details": [{"type": "leash", "actions": ["destructive"], "identifier": "delete_repo"}]}},
	)
	allowed(with_detail)

	# ...as a scope...
	allowed(call("delete_repo", "destructive", [], array.concat(scopes, ["destructive:delete_repo"])))

	# ...or in data, for the task.
	allowed(call("delete_repo", "destructive", [], scopes)) with data.leash.grants as {"t-1": {"destructive": ["delete_repo"]}}
	denied_because(call("delete_repo", "destructive", [], scopes), "destructive action on delete_repo needs an explicit grant") with data.leash.grants as {"t-2": {"destructive": ["delete_repo"]}}
}

test_exports_have_their_own_gate if {
	scopes := ["tool:crm_export:read"]
	denied_because(call("crm_export", "read", ["export"], scopes), "export from crm_export needs an export grant")
	allowed(call("crm_export", "read", ["export"], array.concat(scopes, ["export:crm_export"])))
}

test_privilege_changes_need_a_grant_and_a_human if {
	scopes := ["tool:grant_role:write", "privilege:grant_role"]
	allowed(call("grant_role", "write", ["privilege"], scopes))
	denied_because(call("grant_role", "write", ["privilege"], ["tool:grant_role:write"]), "privilege change on grant_role needs a privilege grant")
	no_human := object.union(call("grant_role", "read", ["privilege"], scopes), {"leash": {"human": null}})
	denied_because(no_human, "privilege change on grant_role needs a human on whose behalf the agent acts")
}

test_delegation_depth_is_limited if {
	deep := request({"delegation": {"chain": ["a", "b", "c"], "depth": 3, "may_act": null}})
	denied_because(deep, "a delegation chain of 3 agents exceeds the limit of 2")
	allowed(deep) with data.leash.settings as {"max_delegation_depth": 3}
}

test_unknown_tools_are_refused_by_default if {
	unknown := request({"tool": {"name": "mystery", "arguments": {}, "known": false}, "scopes": ["tool:mystery:read"]})
	denied_because(unknown, "tool mystery is not in the operator's tool table")
	allowed(unknown) with data.leash.settings as {"allow_unknown_tools": true}
}

test_unauthenticated_requests_may_only_read if {
	anonymous := {
		"authenticated": false, "human": null, "agent": null, "task": null,
		"scopes": [], "tool": null,
		"delegation": {"chain": [], "depth": 0, "may_act": null},
	}
	allowed(request(object.union(anonymous, {"action": {"class": "read", "tags": [], "source": "method"}})))
	denied_because(
		request(object.union(anonymous, {"action": {"class": "write", "tags": [], "source": "method"}})),
		"unauthenticated requests may only read",
	)
}

test_every_reason_is_reported_at_once if {
	req := object.union(call("wipe", "destructive", ["export"], []), {"leash": {"human": null}})
	reasons(req) == {
		"destructive action on wipe needs an explicit grant",
		"destructive actions need a human on whose behalf the agent acts",
		"export from wipe needs an export grant",
		"scope tool:wipe:destructive is required",
	}
}

test_a_host_is_named_without_its_port if {
	req := object.union(
		request({"tool": null, "action": {"class": "read", "tags": [], "source": "method"}, "scopes": ["tool:mcp.example:read"]}),
		{"attributes": {"request": {"http": {"host": "mcp.example:8443"}}}},
	)
	allowed(req)
	denied_because(object.union(req, {"leash": {"scopes": ["tool:mcp.example:8443:read"]}}), "scope tool:mcp.example:read is required")
}

test_non_tool_requests_are_named_by_rule_or_host if {
	by_rule := request({"tool": null, "action": {"class": "read", "tags": [], "source": "rule:reports"}, "scopes": ["tool:reports:read"]})
	allowed(by_rule)
	by_host := request({"tool": null, "action": {"class": "read", "tags": [], "source": "method"}, "scopes": ["tool:mcp.example:read"]})
	allowed(by_host)
}

test_a_write_leash_could_not_read_is_refused if {
	opaque := request({"tool": null, "action": {"class": "write", "tags": ["opaque_body"], "source": "method"}, "scopes": ["tool:*:write"]})
	denied_because(opaque, "cannot tell what this write request to mcp.example does: its body was cut, is neither JSON nor a form, or is a JSON-RPC batch; name the route in an actions rule")

	# A read is not gated on its body, and a readable write passes as before.
	allowed(request({"tool": null, "action": {"class": "read", "tags": ["opaque_body"], "source": "method"}, "scopes": ["tool:*:read"]}))
	allowed(request({"tool": null, "action": {"class": "write", "tags": [], "source": "method"}, "scopes": ["tool:*:write"]}))
}
