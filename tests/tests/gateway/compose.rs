//! docker-compose.yml cannot run here (no Docker engine): check what can be checked. It
//! parses; it has the topology of `deploy/mesh`; only the gateway publishes a port; every
//! dependency waits on a health check; and every command flag and environment variable it
//! gives a chatmesh binary is one that binary's `--help` lists.

use std::collections::BTreeMap;
use std::process::Command;

use chatmesh_e2e::harness::{binary, repo_root};
use serde_yaml::Value;

/// Read by every binary's telemetry setup rather than by its flags.
const TELEMETRY_VARS: [&str; 2] = ["RUST_LOG", "CHATMESH_LOG_FORMAT"];

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    value.apply_merge().expect("merge keys resolve");
    // Merges nested under `services.*` (the `<<: *service` lines) need a second pass there.
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().expect("service merge keys resolve");
        }
    }
    value
}

fn help(binary_name: &str) -> String {
    let output = Command::new(binary(binary_name)).arg("--help").output().expect("run --help");
    assert!(output.status.success(), "{binary_name} --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn compose_matches_the_binaries_and_the_process_mesh() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    for expected in [
        "mysql",
        "redis",
        "rabbitmq",
        "elasticsearch",
        "chat-write",
        "chat-read",
        "chat-read-consumer",
        "chat-read-cron",
        "chat-stream",
        "segments",
        "events",
        "gateway",
    ] {
        assert!(names.contains(&expected), "no service {expected}: {names:?}");
    }
    assert!(compose["services"]["mysql"]["image"].as_str().unwrap().starts_with("mysql:8"));
    let redis_command = strings(&compose["services"]["redis"]["command"]).join(" ");
    assert!(redis_command.contains("--appendonly yes"), "Redis with AOF: {redis_command}");
    for replicated in ["chat-write", "chat-read-consumer"] {
        let replicas = compose["services"][replicated]["deploy"]["replicas"].as_u64().unwrap_or(1);
        assert!(replicas >= 2, "{replicated} has {replicas} replica");
    }

    let stream_command = strings(&compose["services"]["chat-stream"]["command"]);
    assert_eq!(stream_command, ["chat-read", "--stream"], "chat-stream runs chat-read in the stream role");

    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if name == "gateway" {
            assert_eq!(strings(&service["ports"]), ["8088:8088"], "the gateway publishes its port");
        } else {
            assert!(service.get("ports").is_none(), "{name} publishes a port");
        }
        assert!(service.get("healthcheck").is_some(), "{name} has no health check");
        if let Some(depends) = service.get("depends_on").and_then(Value::as_mapping) {
            for (dependency, condition) in depends {
                let dependency = dependency.as_str().unwrap();
                assert_eq!(condition["condition"], "service_healthy", "{name} → {dependency}");
                assert!(services.contains_key(dependency), "{name} depends on unknown {dependency}");
            }
        }
        if service["image"] != "chatmesh:latest" {
            continue;
        }
        let command = strings(&service["command"]);
        let binary_name = command.first().unwrap_or_else(|| panic!("{name}: no command")).clone();
        let help = helps.entry(binary_name.clone()).or_insert_with(|| help(&binary_name));
        for flag in command.iter().filter(|arg| arg.starts_with("--")) {
            assert!(help.contains(&format!("{flag} ")), "{name}: `{binary_name} --help` has no {flag}");
        }
        if let Some(environment) = service.get("environment").and_then(Value::as_mapping) {
            for key in environment.keys().filter_map(Value::as_str) {
                // A secret's value is hidden from `--help`: `[env: KEY]`.
                let listed = help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]"));
                assert!(listed || TELEMETRY_VARS.contains(&key), "{name}: `{binary_name} --help` reads no {key}");
            }
        }
    }

    // The Dockerfile's environment is read by the binaries too.
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let all_help: String = ["chat-write", "chat-read", "gateway"].iter().map(|b| help(b)).collect();
    for key in dockerfile
        .lines()
        .map(|line| line.trim().trim_start_matches("ENV "))
        .filter_map(|line| line.split_once('=').map(|(k, _)| k.trim()))
        .filter(|key| key.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !key.is_empty())
    {
        assert!(all_help.contains(&format!("[env: {key}=")) || TELEMETRY_VARS.contains(&key), "Dockerfile sets {key}");
    }

    // The gateway runs the deployed config, whose pools are the compose services on the ports
    // they listen on.
    let gateway = &compose["services"]["gateway"];
    let command = strings(&gateway["command"]);
    let config_at = command.iter().position(|a| a == "--config").map(|i| command[i + 1].clone()).unwrap();
    assert!(
        strings(&gateway["volumes"]).contains(&format!("./deploy/gateway.toml:{config_at}:ro")),
        "the gateway reads deploy/gateway.toml"
    );
    let check = Command::new(binary("gateway"))
        .args(["--check", "--config"])
        .arg(repo_root().join("deploy/gateway.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let config: toml_pools::Pools =
        toml_pools::parse(&std::fs::read_to_string(repo_root().join("deploy/gateway.toml")).unwrap());
    let mesh = std::fs::read_to_string(repo_root().join("deploy/mesh")).unwrap();
    for (pool, upstreams) in config {
        assert!(mesh.contains(&format!("pool[{pool}]")), "deploy/mesh registers no upstream in pool {pool}");
        for upstream in upstreams {
            let (host, port) = upstream.rsplit_once(':').unwrap();
            let listen = compose["services"][host]["environment"]["CHATMESH_LISTEN"].as_str();
            assert_eq!(
                listen,
                Some(format!("0.0.0.0:{port}").as_str()),
                "pool {pool}: {upstream} is not a compose service"
            );
        }
    }

    // The process mesh reads the same variables.
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "AMQP_URL",
        "ELASTICSEARCH_URL",
        "CHATMESH_NAMESPACE",
        "GATEWAY_CONFIG",
        "STREAM_REPLICAS",
    ] {
        assert!(mesh.contains(var), "deploy/mesh does not handle {var}");
    }
    let script_flags = ["--api", "--consumer", "--cron", "--stream", "--listen", "--config", "--admin-listen"];
    for flag in script_flags {
        assert!(mesh.contains(flag), "deploy/mesh does not use {flag}");
    }
}

/// The `[pools]` table of the gateway config, without a TOML parser in this crate.
mod toml_pools {
    pub type Pools = Vec<(String, Vec<String>)>;

    pub fn parse(text: &str) -> Pools {
        let mut in_pools = false;
        let mut pools = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_pools = line == "[pools]";
                continue;
            }
            if !in_pools || line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, list) = line.split_once('=').expect("pool = [...]");
            let upstreams = list
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            pools.push((name.trim().to_owned(), upstreams));
        }
        pools
    }
}
