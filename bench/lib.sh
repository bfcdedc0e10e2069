# Shared by bench/e2e and bench/soak: an Envoy bootstrap in front of an ext_authz
# server, and small waits. Sourced, not run.

# $1: "none" | "tcp:PORT" | "pipe:PATH"
envoy_config() {
  local authz_filter="" authz_cluster=""
  case "$1" in
    none) ;;
    *)
      if [[ $1 == tcp:* ]]; then
        addr="socket_address: { address: 127.0.0.1, port_value: ${1#tcp:} }"
      else
        addr="pipe: { path: ${1#pipe:} }"
      fi
      authz_filter='
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              stat_prefix: authz
              grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 1s }'
      authz_cluster="
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: authz
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { $addr } } }] }]"
      ;;
  esac
  cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 9901 } } }
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 10000
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
          http_filters:$authz_filter
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }$authz_cluster
YAML
}

wait_http() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "timeout waiting for $1" >&2; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

