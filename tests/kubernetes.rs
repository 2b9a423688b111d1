//! `examples/kubernetes/` holds up: every manifest validates against the
//! Kubernetes schemas (kubernetes-validate, strict, for 1.30 and its latest),
//! the ConfigMap's `tether.toml` loads with tether's own loader, and the
//! fields that matter are right: the native sidecar (an init container with
//! `restartPolicy: Always`), probes on `/tether/readyz` and `/tether/healthz`
//! at tether's port, a preStop delay plus `server.shutdown_grace_secs` within
//! the termination grace period, REDIS_URL from the Secret, image, ports,
//! resources, and a Service that reaches the gateway's pods.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::tools::{ops_tool, run};
use serde::Deserialize;
use serde_json::Value;
use tether::config::{Settings, Sources};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes");
const FILES: [&str; 4] = [
    "configmap.yaml",
    "secret.yaml",
    "sidecar.yaml",
    "gateway.yaml",
];

/// The port tether listens on in the ConfigMap and the image.
const PORT: u64 = 8080;

/// Every document of `examples/kubernetes/{file}`.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{DIR}/{file}")).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn only(file: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{file} holds one {kind}");
    found.remove(0)
}

/// The settings tether starts with from the ConfigMap's `tether.toml`.
fn configmap_settings() -> Settings {
    let configmap = only("configmap.yaml", "ConfigMap");
    let toml = configmap["data"]["tether.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, toml).unwrap();
    let sources = Sources {
        file: Some(path),
        env: HashMap::from([("REDIS_URL".into(), "redis://redis:6379/0".into())]),
        ..Sources::default()
    };
    Settings::load(&sources).expect("the ConfigMap's tether.toml is a valid configuration")
}

/// What a pod running tether must get right, for the sidecar and the gateway.
fn check_tether_pod(label: &str, pod: &Value, tether: &Value) {
    let settings = configmap_settings();
    assert_eq!(
        settings.server.listen.port() as u64,
        PORT,
        "{label}: listen port"
    );
    assert!(
        tether["image"].as_str().unwrap().starts_with("tether:"),
        "{label}: the image built from the Dockerfile"
    );
    let port = &tether["ports"][0];
    assert_eq!(port["containerPort"], PORT, "{label}: container port");
    for (probe, path) in [
        ("readinessProbe", "/tether/readyz"),
        ("livenessProbe", "/tether/healthz"),
    ] {
        let get = &tether[probe]["httpGet"];
        assert_eq!(get["path"], path, "{label}: {probe} path");
        assert!(
            get["port"] == port["name"] || get["port"] == PORT,
            "{label}: {probe} probes tether's port"
        );
    }
    let pre_stop = tether["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{label}: a preStop sleep lets endpoints drain"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let shutdown = settings.server.shutdown_grace;
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pre_stop) + shutdown,
        "{label}: grace period {grace}s covers the preStop {pre_stop}s and shutdown_grace {shutdown:?}"
    );
    let redis = tether["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "REDIS_URL")
        .unwrap_or_else(|| panic!("{label}: REDIS_URL is set"));
    let secret_ref = &redis["valueFrom"]["secretKeyRef"];
    let secret = only("secret.yaml", "Secret");
    assert_eq!(
        secret_ref["name"], secret["metadata"]["name"],
        "{label}: REDIS_URL from the Secret"
    );
    assert!(
        secret["stringData"]
            .get(secret_ref["key"].as_str().unwrap())
            .is_some(),
        "{label}: the Secret has the key"
    );
    let resources = &tether["resources"];
    assert!(
        resources["requests"]["cpu"].is_string() && resources["requests"]["memory"].is_string(),
        "{label}: requests"
    );
    assert!(
        resources["limits"]["memory"].is_string(),
        "{label}: a memory limit"
    );
    check_config_mount(label, pod, tether);
}

/// `--config` names the ConfigMap's key under the mount of the ConfigMap.
fn check_config_mount(label: &str, pod: &Value, tether: &Value) {
    let args: Vec<&str> = tether["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let file = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{label}: tether runs with --config"));
    let mount = &tether["volumeMounts"][0];
    assert_eq!(
        file,
        format!("{}/tether.toml", mount["mountPath"].as_str().unwrap()),
        "{label}: --config is the mounted key"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let configmap = only("configmap.yaml", "ConfigMap");
    assert_eq!(
        volume["configMap"]["name"], configmap["metadata"]["name"],
        "{label}: the volume is the ConfigMap"
    );
}

#[tokio::test]
async fn the_manifests_validate_against_the_kubernetes_schemas() {
    for version in ["1.30.0", "1.37.0"] {
        let mut command = tokio::process::Command::new(ops_tool("kubernetes-validate"));
        command
            .args(["--strict", "--quiet", "-k", version])
            .args(FILES.map(|f| format!("{DIR}/{f}")));
        let output = run(command, Duration::from_secs(60)).await;
        assert!(
            output.success,
            "examples/kubernetes is valid for Kubernetes {version}:\n{}\n{}",
            output.stdout, output.stderr
        );
    }
}

#[test]
fn the_sidecar_is_a_native_sidecar_that_is_ready_before_the_app() {
    let deployment = only("sidecar.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let tether = &pod["initContainers"][0];
    assert_eq!(tether["name"], "tether");
    assert_eq!(
        tether["restartPolicy"], "Always",
        "an init container with restartPolicy Always is a native sidecar"
    );
    check_tether_pod("sidecar", pod, tether);
    let app = &pod["containers"][0];
    let base_url = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OPENAI_BASE_URL")
        .unwrap();
    assert_eq!(
        base_url["value"],
        format!("http://localhost:{PORT}/v1"),
        "the app's SDK points at the sidecar"
    );
}

#[test]
fn the_gateway_is_a_deployment_behind_a_service() {
    let deployment = only("gateway.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let tether = &pod["containers"][0];
    check_tether_pod("gateway", pod, tether);
    assert!(
        deployment["spec"]["replicas"].as_u64().unwrap() >= 2,
        "replicas share Redis, so streams resume on any"
    );
    let service = only("gateway.yaml", "Service");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects the pods");
    }
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        *target == tether["ports"][0]["name"] || *target == PORT,
        "the Service reaches tether's port"
    );
}
