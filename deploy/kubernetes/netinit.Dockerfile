# The agent pod's init container (agent.yaml, egress-redirect): iptables, nothing else,
# so that the pod start fetches nothing and the image can be pinned by digest.
#
#   docker build -f deploy/kubernetes/netinit.Dockerfile -t registry.example.com/leash-netinit:0.1.0 .
FROM alpine:3.20
RUN apk add --no-cache iptables ip6tables
