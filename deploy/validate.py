#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests under k8s/.

Run it through deploy/validate.sh, which provides the pinned packages of
deploy/requirements.txt. It checks:

1. every YAML document under k8s/ against the strict (no unknown fields)
   OpenAPI schema of each Kubernetes version in K8S_VERSIONS, using the
   schemas that kubernetes-validate ships (no network, no cluster); the two
   kinds without an upstream schema (Kustomization, the Prometheus
   Operator's ServiceMonitor) against the strict subset schemas below;
2. kustomize composition: the kustomization's `resources` are exactly the
   manifests at the top of k8s/ (examples/ stays opt-in), and, when a
   `kustomize` or `kubectl` binary is on PATH, `kustomize build` output
   holds exactly those objects and validates too;
3. the manifests against each other: selectors select the broker's pods
   (and not the migration Job's), ports and names resolve, the
   checksum/config annotation is the sha256 of the ConfigMap's config.toml,
   the rollout, probe, shutdown and security settings are the ones
   docs/operations.md describes.

The Rust side (tests/deploy.rs) checks the same files against the binary:
config keys, defaults, the exposed port and the shutdown timing.
"""

import hashlib
import pathlib
import shutil
import subprocess
import sys
import tomllib

import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
EXAMPLES = K8S / "examples"

# The oldest Kubernetes the manifests support (the native preStop sleep
# action is on by default from 1.30) and the newest the pinned
# kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

BROKER_LABELS = {
    "app.kubernetes.io/name": "claudemesh-broker",
    "app.kubernetes.io/component": "broker",
}
SECRET_ENV = {"DATABASE_URL": "database-url", "BROKER_ADMIN_TOKEN": "admin-token"}
OWNER_URL_KEY = "owner-database-url"
CONFIG_KEY = "config.toml"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}

# Strict subsets of schemas kubernetes-validate does not ship. Fields not
# listed are refused, so a typo fails here as it would in the real CRD;
# extend a schema when a manifest starts using a new (real) field.
LOCAL_SCHEMAS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "type": "object",
        "required": ["apiVersion", "kind", "resources"],
        "properties": {
            "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
            "kind": {"const": "Kustomization"},
            "metadata": _METADATA,
            "resources": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
            },
            "images": {"type": "array", "items": {"type": "object"}},
            "labels": {"type": "array", "items": {"type": "object"}},
            "patches": {"type": "array", "items": {"type": "object"}},
            "namePrefix": {"type": "string"},
            "nameSuffix": {"type": "string"},
        },
        "additionalProperties": False,
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "namespaceSelector": {"type": "object"},
                    "selector": {
                        "type": "object",
                        "properties": {
                            "matchLabels": _STRING_MAP,
                            "matchExpressions": {"type": "array"},
                        },
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {
                                    "type": "string",
                                    "pattern": "^([0-9]+(ms|s|m|h))+$",
                                },
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^([0-9]+(ms|s|m|h))+$",
                                },
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {"type": "array"},
                                "metricRelabelings": {"type": "array"},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def manifest_files() -> list[pathlib.Path]:
    files = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))
    for p in files:
        if p.suffix == ".yml":
            fail(f"{rel(p)}: use the .yaml extension")
    return files


def load(path: pathlib.Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{rel(path)}: YAML does not parse: {e}")
        return []
    for d in docs:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            fail(f"{rel(path)}: every document needs apiVersion and kind")
            return []
    if not docs:
        fail(f"{rel(path)}: no YAML document")
    return docs


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"


def schema_check(where: str, doc: dict) -> None:
    local = LOCAL_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if local is not None:
        v = jsonschema.Draft202012Validator(local)
        for e in sorted(v.iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in e.path) or "(root)"
            fail(f"{where}: {name_of(doc)}: {path}: {e.message}")
        return
    for version in K8S_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            fail(f"{where}: {name_of(doc)} against Kubernetes {e.version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            fail(f"{where}: {e.message} (add a strict schema to LOCAL_SCHEMAS)")
        except kv.VersionNotSupportedError:
            fail(f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {version}")


def check_kustomization(files: list[pathlib.Path], docs_by_file: dict) -> list[pathlib.Path]:
    kfile = K8S / "kustomization.yaml"
    if kfile not in docs_by_file:
        fail("k8s/kustomization.yaml is missing")
        return []
    resources = docs_by_file[kfile][0].get("resources", [])
    expected = sorted(
        p.name for p in files if p.parent == K8S and p.name != "kustomization.yaml"
    )
    if sorted(resources) != expected:
        fail(
            "k8s/kustomization.yaml: resources must list exactly the manifests at the "
            f"top of k8s/ (examples/ stays out): listed {sorted(resources)}, present {expected}"
        )
    return [K8S / r for r in resources if (K8S / r).is_file()]


def kustomize_build() -> tuple[list[dict] | None, str]:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(K8S)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(K8S)]
    else:
        return None, "no kustomize or kubectl on PATH: composition checked by the resource list"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        fail(f"`{' '.join(cmd[:2])}` could not run: {e}")
        return None, ""
    if out.returncode != 0:
        fail(f"`{' '.join(cmd[:2])} k8s` failed: {out.stderr.strip()}")
        return None, ""
    return [d for d in yaml.safe_load_all(out.stdout) if d], f"built with `{' '.join(cmd[:2])}`"


def selects(match_labels: dict | None, labels: dict) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def one(objs: dict, kind: str, where: str = "k8s/") -> dict | None:
    found = [d for (k, _), d in objs.items() if k == kind]
    if len(found) != 1:
        fail(f"{where}: expected exactly one {kind}, found {len(found)}")
        return None
    return found[0]


def probe_path(container: dict, probe: str) -> str | None:
    return ((container.get(probe) or {}).get("httpGet") or {}).get("path")


def check_consistency(base: dict, examples: dict) -> None:
    deploy = one(base, "Deployment")
    svc = one(base, "Service")
    cm = one(base, "ConfigMap")
    pdb = one(base, "PodDisruptionBudget")
    hpa = one(base, "HorizontalPodAutoscaler")
    if not all([deploy, svc, cm, pdb, hpa]):
        return
    spec = deploy["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    podspec = pod["spec"]
    d = "k8s/deployment.yaml"

    if not selects(BROKER_LABELS, labels):
        fail(f"{d}: pod labels must include {BROKER_LABELS}")
    if spec["selector"].get("matchLabels") != BROKER_LABELS:
        fail(f"{d}: selector.matchLabels must be {BROKER_LABELS}")

    # Rollout.
    if spec.get("replicas") != 3:
        fail(f"{d}: replicas must be 3")
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    if spec.get("strategy", {}).get("type") != "RollingUpdate" or ru.get("maxSurge") != 1 or ru.get("maxUnavailable") != 0:
        fail(f"{d}: strategy must be RollingUpdate with maxSurge 1, maxUnavailable 0")
    if spec.get("minReadySeconds", 0) < 5:
        fail(f"{d}: minReadySeconds must be at least 5")

    containers = {c["name"]: c for c in podspec["containers"]}
    broker = containers.get("broker")
    if broker is None:
        fail(f"{d}: no container named broker")
        return
    ports = {p.get("name"): p["containerPort"] for p in broker.get("ports", [])}
    if "http" not in ports:
        fail(f"{d}: the broker container needs a port named http")

    # Probes.
    if probe_path(broker, "livenessProbe") != "/health":
        fail(f"{d}: livenessProbe must GET /health")
    if probe_path(broker, "readinessProbe") != "/health/ready":
        fail(f"{d}: readinessProbe must GET /health/ready")
    if probe_path(broker, "startupProbe") != "/health":
        fail(f"{d}: startupProbe must GET /health")
    else:
        sp = broker["startupProbe"]
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        if budget < 120:
            fail(f"{d}: startupProbe allows {budget}s; the migration lock wait needs at least 120s")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = ((broker.get(probe) or {}).get("httpGet") or {}).get("port")
        if port is not None and port not in ports and port not in ports.values():
            fail(f"{d}: {probe} port {port!r} is not a container port")
        if (broker.get(probe) or {}).get("timeoutSeconds", 1) < 1:
            fail(f"{d}: {probe} timeoutSeconds must be at least 1")

    # Shutdown.
    sleep = (((broker.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
    if not sleep:
        fail(f"{d}: the broker needs lifecycle.preStop.sleep.seconds > 0")
    elif podspec.get("terminationGracePeriodSeconds", 30) <= sleep:
        fail(f"{d}: terminationGracePeriodSeconds must exceed the preStop sleep")

    # Security.
    psc = podspec.get("securityContext", {})
    csc = broker.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        fail(f"{d}: runAsNonRoot must be true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if not isinstance(uid, int) or uid == 0:
        fail(f"{d}: runAsUser must be a non-zero number")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail(f"{d}: allowPrivilegeEscalation must be false")
    if csc.get("readOnlyRootFilesystem") is not True:
        fail(f"{d}: readOnlyRootFilesystem must be true")
    if csc.get("privileged", False):
        fail(f"{d}: the broker must not be privileged")
    if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
        fail(f"{d}: capabilities.drop must be [ALL]")
    if podspec.get("enableServiceLinks") is not False:
        fail(f"{d}: enableServiceLinks must be false (a Service named `broker` would set BROKER_PORT)")
    if podspec.get("automountServiceAccountToken") is not False:
        fail(f"{d}: automountServiceAccountToken must be false")

    res = broker.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                fail(f"{d}: resources.{part}.{r} is missing")

    tsc = podspec.get("topologySpreadConstraints", [])
    if not tsc:
        fail(f"{d}: topologySpreadConstraints are missing")
    for c in tsc:
        if not selects(c.get("labelSelector", {}).get("matchLabels"), labels):
            fail(f"{d}: a topologySpreadConstraint does not select the broker's pods")

    # Secrets and config.
    env = {e["name"]: e for e in broker.get("env", [])}
    secret_names = set()
    for var, key in SECRET_ENV.items():
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if not ref or ref.get("key") != key:
            fail(f"{d}: env {var} must come from a secretKeyRef with key {key}")
        else:
            secret_names.add(ref["name"])
    if len(secret_names) > 1:
        fail(f"{d}: DATABASE_URL and BROKER_ADMIN_TOKEN should come from one Secret")
    for name, e in env.items():
        if "value" in e and (name in SECRET_ENV or "TOKEN" in name or "PASSWORD" in name):
            fail(f"{d}: env {name} carries a literal value; secrets come from the Secret")

    cm_name = cm["metadata"]["name"]
    text = (cm.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        fail(f"k8s/configmap.yaml: data.{CONFIG_KEY} is missing")
        return
    try:
        toml = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"k8s/configmap.yaml: {CONFIG_KEY} is not valid TOML: {e}")
        toml = {}
    for secret in ("database_url", "admin_token"):
        if secret in toml:
            fail(f"k8s/configmap.yaml: {secret} must come from the Secret, not the ConfigMap")
    want = hashlib.sha256(text.encode()).hexdigest()
    have = pod["metadata"].get("annotations", {}).get("checksum/config")
    if have != want:
        fail(f'{d}: annotation checksum/config is {have!r}; set it to "{want}" (sha256 of {CONFIG_KEY} in k8s/configmap.yaml)')

    volumes = {v["name"]: v for v in podspec.get("volumes", [])}
    config_arg = None
    args = broker.get("args", [])
    if "--config" in args[:-1]:
        config_arg = args[args.index("--config") + 1]
    if not args or args[0] != "serve" or config_arg is None:
        fail(f"{d}: args must be serve --config <path>")
    mounted = False
    for m in broker.get("volumeMounts", []):
        vol = volumes.get(m["name"], {})
        if (vol.get("configMap") or {}).get("name") == cm_name:
            mounted = True
            if not m.get("readOnly"):
                fail(f"{d}: mount the ConfigMap readOnly")
            if config_arg != f"{m['mountPath'].rstrip('/')}/{CONFIG_KEY}":
                fail(f"{d}: --config {config_arg} is not the mounted {m['mountPath']}/{CONFIG_KEY}")
    if not mounted:
        fail(f"{d}: the ConfigMap {cm_name} is not mounted")

    # Service.
    s = "k8s/service.yaml"
    if svc["spec"].get("selector") != BROKER_LABELS:
        fail(f"{s}: selector must be {BROKER_LABELS}")
    svc_ports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
    for p in svc_ports.values():
        t = p.get("targetPort", p.get("port"))
        if t not in ports and t not in ports.values():
            fail(f"{s}: targetPort {t!r} is not a port of the broker container")

    # PodDisruptionBudget.
    if pdb["spec"].get("maxUnavailable") != 1:
        fail("k8s/pdb.yaml: maxUnavailable must be 1")
    if not selects(pdb["spec"].get("selector", {}).get("matchLabels"), labels):
        fail("k8s/pdb.yaml: selector does not select the broker's pods")

    # HorizontalPodAutoscaler.
    h = "k8s/hpa.yaml"
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref.get("kind"), ref.get("name")) != ("Deployment", deploy["metadata"]["name"]):
        fail(f"{h}: scaleTargetRef must name the Deployment")
    if hpa["spec"].get("minReplicas", 1) < spec.get("replicas", 1):
        fail(f"{h}: minReplicas is below the Deployment's replicas")
    if not any((m.get("resource") or {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
        fail(f"{h}: scale on CPU")
    down = (hpa["spec"].get("behavior") or {}).get("scaleDown") or {}
    if down.get("stabilizationWindowSeconds", 300) < 600:
        fail(f"{h}: scaleDown.stabilizationWindowSeconds must be at least 600 (scale-down closes sockets)")
    if not broker.get("resources", {}).get("requests", {}).get("cpu"):
        fail(f"{h}: CPU utilization needs a CPU request on the broker container")

    # Examples.
    sm = examples.get(("ServiceMonitor", "claudemesh-broker"))
    if sm is None:
        fail("k8s/examples/: the ServiceMonitor example is missing")
    else:
        if not selects(sm["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})):
            fail("k8s/examples/servicemonitor.yaml: selector does not select the Service")
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports:
                fail(f"k8s/examples/servicemonitor.yaml: port {ep.get('port')!r} is not a Service port name")
            if ep.get("path", "/metrics") != "/metrics":
                fail("k8s/examples/servicemonitor.yaml: the broker serves /metrics")

    ing = one(examples, "Ingress", "k8s/examples/")
    if ing is not None:
        for rule in ing["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                b = p["backend"]["service"]
                port = b["port"].get("name", b["port"].get("number"))
                if b["name"] != svc["metadata"]["name"] or (
                    port not in svc_ports and port not in [q["port"] for q in svc_ports.values()]
                ):
                    fail(f"k8s/examples/ingress.yaml: backend {b} is not the broker Service")
        paths = {p["path"] for r in ing["spec"].get("rules", []) for p in r.get("http", {}).get("paths", [])}
        if "/ws" not in paths and "/" not in paths:
            fail("k8s/examples/ingress.yaml: /ws must be routed")
        if any(p.startswith(("/admin", "/metrics")) for p in paths):
            fail("k8s/examples/ingress.yaml: keep /admin and /metrics off the public Ingress")

    job = one(examples, "Job", "k8s/examples/")
    if job is not None:
        j = "k8s/examples/migrate-job.yaml"
        jpod = job["spec"]["template"]
        jc = jpod["spec"]["containers"][0]
        if (jc.get("args") or [None])[0] != "migrate":
            fail(f"{j}: the Job runs `migrate`")
        if jc.get("image") != broker.get("image"):
            fail(f"{j}: image {jc.get('image')} differs from the Deployment's {broker.get('image')}")
        if selects(svc["spec"].get("selector"), jpod["metadata"].get("labels", {})):
            fail(f"{j}: the Service selector must not select the migration pods")
        if selects(pdb["spec"]["selector"].get("matchLabels"), jpod["metadata"].get("labels", {})):
            fail(f"{j}: the PodDisruptionBudget must not select the migration pods")
        jenv = {e["name"]: e for e in jc.get("env", [])}
        jref = ((jenv.get("DATABASE_URL") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        # The schema owner's URL, beside the serving role's in the same Secret.
        if (jref.get("name"), jref.get("key")) != (next(iter(secret_names), None), OWNER_URL_KEY):
            fail(f"{j}: DATABASE_URL must come from the Deployment's Secret, key {OWNER_URL_KEY}")
        jsc = jc.get("securityContext", {})
        if jsc.get("allowPrivilegeEscalation") is not False or jsc.get("readOnlyRootFilesystem") is not True:
            fail(f"{j}: use the Deployment's container security context")
        if jpod["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            fail(f"{j}: restartPolicy must be Never or OnFailure")


def main() -> int:
    files = manifest_files()
    docs_by_file: dict[pathlib.Path, list[dict]] = {}
    count = 0
    for path in files:
        docs = load(path)
        docs_by_file[path] = docs
        for doc in docs:
            schema_check(rel(path), doc)
            count += 1

    resources = check_kustomization(files, docs_by_file)
    base = {}
    for path in resources:
        for doc in docs_by_file.get(path, []):
            key = (doc["kind"], doc["metadata"]["name"])
            if key in base:
                fail(f"{rel(path)}: {key[0]}/{key[1]} is defined twice")
            base[key] = doc
    examples = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for path, docs in docs_by_file.items()
        if EXAMPLES in path.parents
        for doc in docs
    }

    built, how = kustomize_build()
    if built is not None:
        got = sorted((d["kind"], d["metadata"]["name"]) for d in built)
        if got != sorted(base):
            fail(f"kustomize build k8s/ gave {got}, the resource files hold {sorted(base)}")
        for doc in built:
            schema_check("kustomize build k8s/", doc)

    try:
        check_consistency(base, examples)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        fail(f"cross-manifest checks stopped on {type(e).__name__}: {e} (fix the problems above first)")

    if errors:
        for e in errors:
            print(f"deploy/validate: {e}", file=sys.stderr)
        print(f"deploy/validate: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    versions = ", ".join(v.rsplit(".", 1)[0] for v in K8S_VERSIONS)
    print(
        f"deploy/validate: {count} documents in {len(files)} files valid (strict schemas, "
        f"Kubernetes {versions}); kustomization lists {len(resources)} resources; {how}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
