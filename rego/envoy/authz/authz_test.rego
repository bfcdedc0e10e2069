package envoy.authz_test

import rego.v1

import data.envoy.authz

request(method, host, path) := {"attributes": {"request": {"http": {
	"method": method,
	"host": host,
	"path": path,
}}}}

routes := [
	{"name": "read-items", "methods": ["GET", "HEAD"], "hosts": ["api.example.com"], "paths": ["/v1/items", "/v1/items/*"]},
	{"name": "health", "paths": ["/healthz"]},
]

test_denies_everything_without_routes if {
	decision := authz.allow with input as request("GET", "api.example.com", "/v1/items")
	decision.allowed == false
	decision.http_status == 403
	contains(decision.body, "no leash route")
}

test_admits_a_matching_route if {
	decision := authz.allow with input as request("GET", "api.example.com", "/v1/items/42?x=1")
		with data.leash.routes as routes
	decision.allowed == true
	decision.headers["x-leash-route"] == "read-items"
}

test_method_outside_the_route_is_denied if {
	decision := authz.allow with input as request("DELETE", "api.example.com", "/v1/items/42")
		with data.leash.routes as routes
	decision.allowed == false
}

test_host_glob_does_not_cross_dots if {
	decision := authz.allow with input as request("GET", "evil.api.example.com", "/v1/items")
		with data.leash.routes as routes
	decision.allowed == false
}

test_path_glob_does_not_cross_slashes if {
	decision := authz.allow with input as request("GET", "api.example.com", "/v1/items/42/secrets")
		with data.leash.routes as routes
	decision.allowed == false
}

test_route_without_lists_matches_any_method_and_host if {
	decision := authz.allow with input as request("POST", "anything.internal", "/healthz")
		with data.leash.routes as routes
	decision.headers["x-leash-route"] == "health"
}
