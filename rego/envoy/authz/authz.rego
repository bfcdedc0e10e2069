# leash's default decision: a request passes only when a route in data.leash.routes
# admits it. Everything else is denied with a JSON body that says why.
#
# A route: {"name": "...", "methods": ["GET"], "hosts": ["api.example.com"],
#           "paths": ["/v1/items/*"]}. Each list may be left out or hold "*" to
# match anything; hosts and paths are globs where "*" stops at "." and "/".
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"no leash route admits this request\"}",
	"reason": "no route admits this request",
}

allow := {"allowed": true, "headers": {"x-leash-route": admitted[0].name}} if count(admitted) > 0

http := input.attributes.request.http

# The path without its query string; routes match on it.
path := split(http.path, "?")[0]

admitted := [route |
	some route in data.leash.routes
	matches(route, "methods", http.method)
	host_matches(route)
	path_matches(route)
]

matches(route, key, value) if not route[key]

matches(route, key, value) if "*" in route[key]

matches(route, key, value) if value in route[key]

host_matches(route) if not route.hosts

host_matches(route) if {
	some pattern in route.hosts
	glob.match(pattern, ["."], http.host)
}

path_matches(route) if not route.paths

path_matches(route) if {
	some pattern in route.paths
	glob.match(pattern, ["/"], path)
}
