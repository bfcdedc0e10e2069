use super::*;

#[test]
fn every_setting_has_a_working_default() {
    let config = Config::from_yaml("defaults", "", &[]).unwrap();
    assert_eq!(config.listen.grpc, "127.0.0.1:9191".parse().unwrap());
    assert_eq!(config.listen.admin, Some("127.0.0.1:9192".parse().unwrap()));
    assert_eq!(
        config.listen.control,
        Some("127.0.0.1:9193".parse().unwrap())
    );
    assert_eq!(config.listen.max_receive_bytes.get(), 4 * 1024 * 1024);
    assert_eq!(config.listen.grpc_uds, None);
    assert_eq!(config.policy.source, PolicySource::Embedded);
    assert_eq!(
        config.policy.load.decision.as_str(),
        "data.envoy.authz.allow"
    );
    assert_eq!(config.policy.watch_interval, Some(Duration::from_secs(1)));
    assert_eq!(config.log.decisions, AuditLevel::Deny);
}

#[test]
fn the_shipped_example_file_is_the_defaults() {
    let example = Config::from_yaml("deploy/leash.yaml", EXAMPLE, &[]).unwrap();
    let defaults = Config::from_yaml("defaults", "", &[]).unwrap();
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
}

#[test]
fn flags_override_the_file() {
    let file = "listen:\n  grpc: 127.0.0.1:7000\npolicy:\n  dir: /etc/leash/policy\n";
    let config = Config::from_yaml(
        "leash.yaml",
        file,
        &[
            ("listen.grpc", "0.0.0.0:9999".to_owned()),
            ("listen.admin", String::new()),
            ("policy.watch_interval", "0s".to_owned()),
            ("request.max_body_bytes", "65536".to_owned()),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.grpc, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(
        config.listen.admin, None,
        "an empty address turns the listener off"
    );
    assert_eq!(
        config.policy.source,
        PolicySource::Dir("/etc/leash/policy".into())
    );
    assert_eq!(config.policy.watch_interval, None);
    assert_eq!(config.request.body.max_body_bytes, 65536);
}

#[test]
fn an_unknown_key_names_the_file_and_line() {
    let err = Config::from_yaml("leash.yaml", "listen:\n  grcp: 127.0.0.1:1\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("leash.yaml: "), "{err}");
    assert!(err.contains("grcp"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn invalid_values_say_how_to_fix_them() {
    let cases = [
        ("listen.grpc", "localhost", "host:port"),
        ("policy.decision", "", "empty"),
        ("policy.decision", "allow", "package"),
        ("policy.decision", "envoy/authz-x/allow", "identifier"),
        ("policy.engine", "jit", "auto, vm or interpreter"),
        ("policy.eval_timeout", "soon", "duration"),
        ("policy.eval_timeout", "0s", "more than zero"),
        ("log.format", "xml", "text or json"),
        ("log.decisions", "some", "all, deny or off"),
        ("response.reason_header", "x leash", "header name"),
        ("listen.max_connections", "0", "at least 1"),
        ("listen.max_streams_per_connection", "0", "at least 1"),
        (
            "listen.max_buffered_bytes",
            "1024",
            "at least listen.max_receive_bytes",
        ),
        ("listen.request_timeout", "0s", "longer than 0s"),
        ("listen.admin_url", "leash:9192", "as agents reach it"),
        ("listen.admin_url", "ftp://leash:9192", "as agents reach it"),
        (
            "listen.admin_url",
            "http://leash:9192/x",
            "nothing after the port",
        ),
        (
            "listen.admin_url",
            "http://u@leash:9192",
            "as agents reach it",
        ),
        ("listen.max_connection_age", "later", "duration"),
        (
            "tokens.key_wait",
            "5s",
            "shorter than listen.request_timeout",
        ),
    ];
    for (key, value, hint) in cases {
        let err = Config::from_yaml("f.yaml", "", &[(key, value.to_owned())])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}={value}: {err}");
        assert!(err.contains(hint), "{key}={value}: {err}");
    }
}

#[test]
fn approvals_are_polled_where_agents_reach_the_admin_port() {
    let url = |overrides: &[(&str, String)]| {
        Config::from_yaml("f.yaml", "", overrides)
            .unwrap()
            .listen
            .approvals_url
    };
    assert_eq!(url(&[]), "http://127.0.0.1:9192/v1/approvals/");
    assert_eq!(
        url(&[(
            "listen.admin_url",
            "https://leash.agents.svc:9192/".to_owned()
        )]),
        "https://leash.agents.svc:9192/v1/approvals/"
    );
}

#[test]
fn decision_paths_accept_both_spellings() {
    for path in [
        "envoy/authz/allow",
        "/envoy/authz/allow",
        "data.envoy.authz.allow",
        "envoy.authz.allow",
    ] {
        assert_eq!(
            DecisionRule::parse(path).unwrap().as_str(),
            "data.envoy.authz.allow",
            "{path}"
        );
    }
}

#[test]
fn the_agents_example_is_a_valid_configuration() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/leash-agents.yaml"
    ))
    .unwrap();
    let config = Config::from_yaml("deploy/leash-agents.yaml", &text, &[]).unwrap();
    assert_eq!(config.tokens.settings.issuers.len(), 2);
    assert_eq!(config.tokens.unauthenticated.len(), 1);
    assert!(matches!(config.policy.source, PolicySource::Layered(_)));
}

#[test]
fn key_sources_cannot_be_read_in_a_tight_loop() {
    let issuer = |extra: &str| {
        format!(
            "tokens:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [tools]\n      algorithms: [RS256]\n      jwks_file: /dev/null\n{extra}"
        )
    };
    for (setting, hint) in [
        ("      refresh: 0s\n", "at least 10s"),
        ("      min_refetch: 0s\n", "at least 1s"),
    ] {
        let err = Config::from_yaml("f.yaml", &issuer(setting), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(hint), "{setting}: {err}");
    }
    assert!(Config::from_yaml("f.yaml", &issuer("      refresh: 10s\n"), &[]).is_ok());
}

#[test]
fn a_secret_file_others_can_read_is_named_in_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let yaml = format!(
        "tokens:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [tools]\n      algorithms: [HS256]\n      hmac_secret_file: {}\n",
        secret.display()
    );
    let warnings = |mode: u32| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        Config::from_yaml("f.yaml", &yaml, &[])
            .unwrap()
            .tokens
            .warnings
    };
    let shared = warnings(0o644);
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert!(shared[0].contains("tokens.issuers[0].hmac_secret_file"));
    assert!(shared[0].contains("chmod 600"));
    assert!(warnings(0o600).is_empty());
}

#[test]
fn every_invalid_value_is_reported_in_one_run() {
    let yaml = "listen:\n  grpc: nowhere\n  request_timeout: 0s\npolicy:\n  engine: jit\ntokens:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [tools]\n      algorithms: [RS256]\n      jwks_file: /dev/null\n      refresh: 1s\n";
    let err = Config::from_yaml("f.yaml", yaml, &[("log.format", "xml".to_owned())])
        .unwrap_err()
        .to_string();
    for key in [
        "listen.grpc",
        "listen.request_timeout",
        "policy.engine",
        "tokens.issuers[0].refresh",
        "log.format",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
}

#[test]
fn behaviour_rules_are_read_and_mistakes_named() {
    let config = Config::from_yaml(
        "test",
        "behaviour:\n  rules:\n    - { name: d, when: denials, at_least: 5, within: 1m, pause_for: 10m }\n    - { name: n, when: new_tool, after: 10m }\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.behaviour.len(), 2);
    assert_eq!(config.behaviour[0].within, 60);
    assert_eq!(config.behaviour[0].pause_for, Some(600));
    for (rule, key, hint) in [
        (
            "{ name: d, when: sneezes, at_least: 1, within: 1m }",
            "when",
            "denials, calls",
        ),
        (
            "{ name: d, when: denials, at_least: 0, within: 1m }",
            "at_least",
            "1 or more",
        ),
        (
            "{ name: d, when: denials, at_least: 1, within: 2d }",
            "within",
            "at most 24h",
        ),
        ("{ name: d, when: new_tool }", "after", "duration"),
        (
            "{ name: '', when: calls, at_least: 1, within: 1m }",
            "name",
            "a name of its own",
        ),
    ] {
        let err = Config::from_yaml(
            "test",
            &format!("behaviour:\n  rules:\n    - {rule}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("behaviour.rules[0].{key}")), "{err}");
        assert!(err.contains(hint), "{err}");
    }
}

#[test]
fn control_certificates_and_clients_are_read_and_mistakes_named() {
    let yaml = "control:\n  tls: { cert_file: /c.pem, key_file: /k.pem, client_ca_file: /ca.pem }\n  clients:\n    - { name: console, identity: \"spiffe://corp/ns/sec/sa/console\", role: approver }\n    - { name: ops, identity: ops.corp.internal, role: operator }\n";
    let config = Config::from_yaml("test", yaml, &[]).unwrap();
    let tls = config.control.tls.unwrap();
    assert_eq!(
        tls.client_ca_file,
        Some(std::path::PathBuf::from("/ca.pem"))
    );
    assert_eq!(config.control.clients.len(), 2);
    assert_eq!(
        config.control.clients[0].role,
        crate::access::Role::Approver
    );

    let client = |identity: &str, role: &str| {
        format!(
            "control:\n  tls: {{ cert_file: /c.pem, key_file: /k.pem, client_ca_file: /ca.pem }}\n  clients:\n    - {{ name: a, identity: \"{identity}\", role: {role} }}\n"
        )
    };
    let cases = [
        (client("spiffe://corp/a", "root"), "control.clients[0].role"),
        // A required field of a list entry is named too, not reported as missing.
        (
            "control:\n  tokens:\n    - { name: a, file: /x, role: boss }\n".to_owned(),
            "control.tokens[0].role",
        ),
        (client("*.corp.internal", "viewer"), "no wildcards"),
        (client("spiffe://", "viewer"), "control.clients[0].identity"),
        (client("a b", "viewer"), "control.clients[0].identity"),
        (
            "control:\n  tls: { cert_file: /c.pem, key_file: /k.pem }\n  clients:\n    - { name: a, identity: a.corp, role: viewer }\n".to_owned(),
            "client_ca_file: set it",
        ),
        (
            "control:\n  tls: { cert_file: /c.pem }\n".to_owned(),
            "the certificate needs its key",
        ),
        (
            "control:\n  tls: { client_ca_file: /ca.pem }\n".to_owned(),
            "control.tls.client_ca_file",
        ),
        (
            "control:\n  tls: { cert_file: /c.pem, key_file: /k.pem, client_ca_file: /ca.pem }\n  clients:\n    - { name: a, identity: a.corp, role: viewer }\n    - { name: b, identity: A.corp, role: admin }\n".to_owned(),
            "each client once",
        ),
    ];
    for (yaml, hint) in cases {
        let err = Config::from_yaml("f.yaml", &yaml, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(hint), "{yaml}: {err}");
    }
    let off = Config::from_yaml(
        "f.yaml",
        "control:\n  tls: { cert_file: /c.pem, key_file: /k.pem }\n",
        &[("listen.control", String::new())],
    )
    .unwrap_err()
    .to_string();
    assert!(off.contains("listen.control, which is off"), "{off}");
    let crl = Config::from_yaml(
        "f.yaml",
        "control:\n  tls: { cert_file: /c.pem, key_file: /k.pem, client_crl_files: [/ca.crl] }\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(crl.contains("control.tls.client_crl_files"), "{crl}");
    let socket = Config::from_yaml(
        "f.yaml",
        &client("spiffe://corp/a", "viewer"),
        &[("listen.control_uds", "/run/leash/control.sock".to_owned())],
    )
    .unwrap_err()
    .to_string();
    assert!(socket.contains("list a token too"), "{socket}");
}
