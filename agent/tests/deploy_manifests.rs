//! The Kubernetes manifests in `deploy/`, validated without a cluster:
//! - every built-in kind against the API's own schemas by `kubernetes-validate --strict`
//!   (unknown fields and wrong types refused), for the newest Kubernetes it knows and the
//!   oldest the manifests support (1.30: `appArmorProfile`);
//! - the ServiceMonitor, a Prometheus Operator kind those schemas lack, against a schema of
//!   the fields it uses (`tests/data/servicemonitor.schema.json`);
//! - the kustomization and the references between the objects (labels, selectors, ports,
//!   names), which no schema sees.
//!
//! Each validator is shown to refuse a broken copy too. `./bootstrap.sh` installs
//! kubernetes-validate into `target/tools/kubernetes-validate`; without it the test skips
//! with a printed reason (`TRACER_KUBERNETES_VALIDATE` names another one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Kubernetes versions the manifests are validated for: the oldest they support and the
/// newest kubernetes-validate knows.
const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// `kubernetes-validate`, where bootstrap.sh puts it, or as named.
fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TRACER_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let p = target.join("tools/kubernetes-validate/bin/kubernetes-validate");
    if p.is_file() {
        return Some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
}

/// The Python beside the validator (its virtualenv has PyYAML and jsonschema).
fn python(validator: &Path) -> PathBuf {
    validator.with_file_name("python3")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy())
        .expect("deploy/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs `kubernetes-validate --strict -k VERSION files`: (success, output).
fn kubernetes_validate(tool: &Path, version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const LOAD_YAML: &str = r"
import json, sys, yaml
json.dump({f: [d for d in yaml.safe_load_all(open(f)) if d is not None] for f in sys.argv[1:]}, sys.stdout)
";

const CHECK_SCHEMA: &str = r"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
kind = schema['properties']['kind']['const']
bad = 0
for f in sys.argv[2:]:
    for d in yaml.safe_load_all(open(f)):
        if d and d.get('kind') == kind:
            for e in jsonschema.Draft202012Validator(schema).iter_errors(d):
                where = '.'.join(str(p) for p in e.absolute_path)
                print(f'{f}: {kind} .{where}: {e.message}')
                bad += 1
            print(f'{f}: {kind} checked')
sys.exit(1 if bad else 0)
";

/// Every document of `files`, parsed (by PyYAML), by file name.
fn load(python: &Path, files: &[PathBuf]) -> Vec<(String, Value)> {
    let out = Command::new(python)
        .args(["-c", LOAD_YAML])
        .args(files)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut docs = Vec::new();
    for (f, ds) in all {
        let name = Path::new(&f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for d in ds.as_array().unwrap() {
            docs.push((name.clone(), d.clone()));
        }
    }
    docs
}

/// Checks the ServiceMonitors of `files` against the schema: (success, output).
fn check_servicemonitor(python: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(python)
        .args(["-c", CHECK_SCHEMA])
        .arg(root().join("agent/tests/data/servicemonitor.schema.json"))
        .args(files)
        .output()
        .expect("running python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of `file` with `from` replaced by `to`, in `dir`.
fn broken(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy().join(file)).unwrap();
    assert!(text.contains(from), "{file} has no `{from}` to break");
    let p = dir.join(file);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p
}

fn tool_or_skip() -> Option<PathBuf> {
    let tool = validator();
    if tool.is_none() {
        eprintln!("SKIPPED: kubernetes-validate is not installed: run ./bootstrap.sh (it installs it into target/tools/)");
    }
    tool
}

#[test]
fn built_in_kinds_match_the_kubernetes_api_schemas() {
    let Some(tool) = tool_or_skip() else { return };
    let files = manifests();
    for version in VERSIONS {
        let (ok, out) = kubernetes_validate(&tool, version, &files);
        eprint!("{out}");
        assert!(ok, "kubernetes-validate {version}:\n{out}");
        for kind in ["namespace/", "serviceaccount/", "daemonset/", "service/"] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with("INFO") && l.contains(kind) && l.contains("passed")),
                "{kind} was not validated against {version}:\n{out}"
            );
        }
        // What its schemas lack is checked by the other tests here.
        for l in out.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                l.contains("Kustomization") || l.contains("ServiceMonitor"),
                "unexpected: {l}"
            );
        }
    }
}

#[test]
fn kubernetes_validate_refuses_a_wrong_type_and_an_unknown_field() {
    let Some(tool) = tool_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("tracer-deploy-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to, says) in [
        (
            "containerPort: 9464",
            "containerPort: \"9464\"",
            "is not of type 'integer'",
        ),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
            "was unexpected",
        ),
        ("hostPID: true", "hostPid: true", "was unexpected"),
    ] {
        let f = broken(&dir, "daemonset.yaml", from, to);
        let (ok, out) = kubernetes_validate(&tool, VERSIONS[1], &[f]);
        assert!(!ok && out.contains(says), "`{to}` passed:\n{out}");
    }
    // appArmorProfile is 1.30's: older schemas refuse it, which is why 1.30 is the floor.
    let (ok, out) = kubernetes_validate(&tool, "1.29.0", &[deploy().join("daemonset.yaml")]);
    assert!(!ok && out.contains("appArmorProfile"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_servicemonitor_matches_the_operators_fields() {
    let Some(tool) = tool_or_skip() else { return };
    let py = python(&tool);
    let (ok, out) = check_servicemonitor(&py, &manifests());
    eprint!("{out}");
    assert!(
        ok && out.contains("servicemonitor.yaml: ServiceMonitor checked"),
        "{out}"
    );
    let dir = std::env::temp_dir().join(format!("tracer-deploy-sm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("honorLabels: true", "honorLabels: \"true\""),
        ("interval: 30s", "interval: 30 seconds"),
        ("relabelings:", "relabellings:"),
        ("action: replace", "action: rename"),
    ] {
        let f = broken(&dir, "servicemonitor.yaml", from, to);
        let (ok, out) = check_servicemonitor(&py, &[f]);
        assert!(
            !ok && out.contains(": ServiceMonitor .spec"),
            "`{to}` passed:\n{out}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn one<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one checklist, one reference per assertion"
)]
fn the_objects_refer_to_each_other_and_the_kustomization_lists_them_all() {
    let Some(tool) = tool_or_skip() else { return };
    let docs = load(&python(&tool), &manifests());

    // The kustomization lists every other manifest, once, and sets their namespace.
    let kust = one(&docs, "Kustomization");
    let listed: Vec<&str> = kust["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let files: BTreeSet<&str> = docs
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed.iter().copied().collect::<BTreeSet<_>>(), files);
    assert_eq!(listed.len(), files.len(), "listed twice: {listed:?}");
    let ns = one(&docs, "Namespace")["metadata"]["name"]
        .as_str()
        .unwrap();
    assert_eq!(kust["namespace"], ns);
    for (f, d) in &docs {
        if !matches!(d["kind"].as_str(), Some("Namespace" | "Kustomization")) {
            assert_eq!(d["metadata"]["namespace"], ns, "{f}");
        }
    }
    assert_eq!(
        one(&docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged",
        "hostPID and hostPath need a privileged Pod Security level"
    );

    // The DaemonSet: its pods, their account, their agent's port and endpoints.
    let ds = one(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(labels_match(&ds["spec"]["selector"]["matchLabels"], labels));
    let spec = &pod["spec"];
    assert_eq!(
        spec["serviceAccountName"],
        one(&docs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(spec["hostPID"], true);
    assert_ne!(
        spec["hostNetwork"], true,
        "the agent enters proxies' namespaces itself"
    );
    let c = &spec["containers"][0];
    let images: Vec<&Value> = kust["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["name"])
        .collect();
    assert!(images.contains(&&c["image"]), "kustomize sets the image");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"agent"));
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .and_then(|i| args.get(i + 1))
        .expect("--listen ADDR");
    let port = &c["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(
        listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u64>().ok()),
        port["containerPort"].as_u64(),
        "--listen and containerPort"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], port["name"]);
    }
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            assert!(c["resources"][r][k].is_string(), "resources.{r}.{k}");
        }
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["runAsUser"], 0,
        "capabilities reach a non-root user only as ambient ones, which Kubernetes does not set"
    );
    // Every host directory is mounted read-only, and each volume is mounted.
    let mounts = c["volumeMounts"].as_array().unwrap();
    for m in mounts {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    let volumes: BTreeSet<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mounted: BTreeSet<&str> = mounts.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(volumes, mounted);
    for path in ["/sys/kernel/tracing", "/sys/fs/cgroup", "/var/log/pods"] {
        assert!(
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["hostPath"]["path"] == path),
            "{path} is not mounted"
        );
    }

    // The Service selects those pods and names their port.
    let svc = one(&docs, "Service");
    assert!(labels_match(&svc["spec"]["selector"], labels));
    let sport = &svc["spec"]["ports"][0];
    assert_eq!(sport["targetPort"], port["name"]);

    // The ServiceMonitor selects the Service, in its namespace, on that port.
    let sm = one(&docs, "ServiceMonitor");
    assert!(labels_match(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert!(sm["spec"]["namespaceSelector"]["matchNames"]
        .as_array()
        .unwrap()
        .contains(&Value::from(ns)));
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], sport["name"]);
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(
        ep["honorLabels"], true,
        "the agent's namespace and pod labels name the proxy, not the agent"
    );
}
