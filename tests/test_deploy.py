"""deploy/: every manifest loads, and every ``pst-pipeline`` command in it (and in its README)
parses with the real CLI, so a renamed or removed flag fails the build, not the night job. Also
the properties a platform engineer relies on: GPU requests, clusters deleted after their job,
one definition of the nightly job, least-privilege RBAC, no credentials anywhere."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator
from importlib import metadata
from itertools import dropwhile, takewhile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
YAMLS = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
KUBERNETES = DEPLOY / "kubernetes"
PROGRAM = "pst-pipeline"
_SHELL_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kind(path: Path, kind_name: str) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d.get("kind") == kind_name]


# ---- finding commands ---------------------------------------------------------------------
def commands_in_text(text: str) -> Iterator[list[str]]:
    """The arguments of every ``pst-pipeline`` call in shell text (a script, an entrypoint, a
    README code block): continuation lines joined, stopping at ``;``, ``&&``, ``|``, ..."""
    for line in text.replace("\\\n", " ").splitlines():
        if PROGRAM not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if posixpath.basename(token) == PROGRAM:
                yield list(takewhile(lambda t: t not in _SHELL_SEPARATORS, tokens[i + 1 :]))


def commands_in_yaml(node: Any) -> Iterator[list[str]]:
    """Every ``pst-pipeline`` call in a YAML tree: in strings (``entrypoint:``, ``sh -c`` scripts)
    and in exec-form lists (``command: [pst-pipeline, apply, ...]``)."""
    if isinstance(node, str):
        yield from commands_in_text(node)
    elif isinstance(node, dict):
        for value in node.values():
            yield from commands_in_yaml(value)
    elif isinstance(node, list):
        names = [posixpath.basename(item) if isinstance(item, str) else None for item in node]
        if PROGRAM in names and all(isinstance(item, str) for item in node):
            yield node[names.index(PROGRAM) + 1 :]
        else:
            for item in node:
                yield from commands_in_yaml(item)


def readme_commands() -> Iterator[list[str]]:
    text = (DEPLOY / "README.md").read_text()
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.M | re.S):
        yield from commands_in_text(block)


def yaml_commands() -> list[tuple[str, list[str]]]:
    return [(rel(path), args) for path in YAMLS for doc in documents(path) for args in commands_in_yaml(doc)]


ALL_COMMANDS = yaml_commands() + [("deploy/README.md", args) for args in readme_commands()]


def parse(args: list[str]) -> click.Context:
    """Parse ``pst-pipeline ARGS`` as the real CLI would, without running anything: the root
    group's context, then the subcommand's (recursively for groups). Raises click.UsageError."""
    command: click.Command = main
    name, ctx = PROGRAM, None
    while True:
        ctx = command.make_context(name, list(args), parent=ctx)
        if not isinstance(command, click.Group):
            return ctx
        args = list(dropwhile(lambda a: a.startswith("-"), args))  # groups take flags only (tested)
        if not args:
            raise click.UsageError("missing command", ctx=ctx)
        name, command, args = command.resolve_command(ctx, args)


# ---- the commands -------------------------------------------------------------------------
def test_deploy_has_the_expected_files() -> None:
    names = {rel(p) for p in YAMLS}
    assert names == {
        "deploy/ray-cluster.yaml",
        "deploy/kubernetes/namespace.yaml",
        "deploy/kubernetes/train-rayjob.yaml",
        "deploy/kubernetes/apply-rayjob.yaml",
        "deploy/kubernetes/apply-raycronjob.yaml",
        "deploy/kubernetes/apply-cronjob.yaml",
    }


@pytest.mark.parametrize("path", YAMLS, ids=rel)
def test_every_yaml_loads(path: Path) -> None:
    docs = documents(path)
    assert docs and all(isinstance(d, dict) for d in docs)
    if path.parent == KUBERNETES:
        assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)


@pytest.mark.parametrize(
    ("origin", "args"), ALL_COMMANDS, ids=[f"{o}:{' '.join(a[:1])}" for o, a in ALL_COMMANDS]
)
def test_every_command_parses_with_the_real_cli(origin: str, args: list[str]) -> None:
    try:
        parse(args)
    except click.UsageError as exc:
        pytest.fail(f"{origin}: `{PROGRAM} {shlex.join(args)}` does not parse: {exc.format_message()}")


def test_train_and_apply_are_both_deployed() -> None:
    deployed = {parse(args).info_name for _, args in yaml_commands()}
    assert {"train", "apply"} <= deployed


def test_groups_take_only_flags_so_parse_finds_the_subcommand() -> None:
    groups = [main, *(c for c in main.commands.values() if isinstance(c, click.Group))]
    for group in groups:
        assert all(p.is_flag for p in group.params if isinstance(p, click.Option)), group.name


def test_a_renamed_flag_fails_the_parse() -> None:
    """The check has teeth: the deployed apply command with one flag misspelt is refused, and so
    is one missing a required option."""
    apply_args = next(args for _, args in yaml_commands() if args[0] == "apply")
    parse(apply_args)
    with pytest.raises(click.NoSuchOption):
        parse(["--styel" if a == "--style" else a for a in apply_args])
    at = apply_args.index("--output")
    with pytest.raises(click.MissingParameter):
        parse(apply_args[:at] + apply_args[at + 2 :])
    with pytest.raises(click.UsageError):
        parse(["aply", "--style", "x"])


def test_commands_are_found_in_scripts_and_exec_lists() -> None:
    script = "set -e\npst-pipeline -q status --output s3://b/out && echo done\n/usr/bin/pst-pipeline \\\n  styles list"
    assert list(commands_in_text(script)) == [["-q", "status", "--output", "s3://b/out"], ["styles", "list"]]
    tree = {"command": ["pst-pipeline", "apply", "--style", "x"], "args": ["sh", "-c", "pst-pipeline train --pairs p"]}
    assert list(commands_in_yaml(tree)) == [["apply", "--style", "x"], ["train", "--pairs", "p"]]


# ---- KubeRay ------------------------------------------------------------------------------
def rayjob_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every RayJob spec: RayJobs, and the jobTemplate of RayCronJobs."""
    specs = []
    for path in YAMLS:
        for doc in documents(path):
            if doc.get("kind") == "RayJob":
                specs.append((rel(path), doc["spec"]))
            elif doc.get("kind") == "RayCronJob":
                specs.append((rel(path), doc["spec"]["jobTemplate"]))
    return specs


def test_rayjobs_delete_their_cluster_and_use_gpus() -> None:
    specs = rayjob_specs()
    assert len(specs) == 3
    for origin, spec in specs:
        assert spec["shutdownAfterJobFinishes"] is True, origin
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0, origin
        assert spec["activeDeadlineSeconds"] > 0, origin
        assert len(list(commands_in_text(spec["entrypoint"]))) == 1, origin
        cluster = spec["rayClusterSpec"]
        assert cluster["authOptions"] == {"mode": "token"}, origin
        groups = cluster["workerGroupSpecs"]
        assert groups, origin
        for group in groups:
            (container,) = group["template"]["spec"]["containers"]
            resources = container["resources"]
            assert int(resources["requests"]["nvidia.com/gpu"]) >= 1, origin
            assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"], origin
            assert group["minReplicas"] == group["replicas"] == group["maxReplicas"], origin


def test_rayjobs_use_the_platform_identity() -> None:
    (account,) = kind(KUBERNETES / "namespace.yaml", "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for origin, spec in rayjob_specs():
        cluster = spec["rayClusterSpec"]
        templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
        for template in templates:
            assert template["spec"]["serviceAccountName"] == account["metadata"]["name"], origin


def test_everything_runs_in_one_namespace() -> None:
    (namespace,) = kind(KUBERNETES / "namespace.yaml", "Namespace")
    for path in KUBERNETES.glob("*.yaml"):
        for doc in documents(path):
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], rel(path)


def test_ray_versions_match_the_image() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    match = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-cpu$", dockerfile, flags=re.M)
    assert match, "deploy/Dockerfile: ARG RAY_IMAGE=rayproject/ray:<version>-py<NN>-cpu"
    ray_version, python = match[1], Version(f"{match[2]}.{match[3]}")
    assert {spec["rayClusterSpec"]["rayVersion"] for _, spec in rayjob_specs()} == {ray_version}
    assert ray_version in re.findall(r"rayproject/ray:([\d.]+)-", (DEPLOY / "README.md").read_text())
    (ray_requirement,) = [r for r in map(Requirement, metadata.requires("photostyle")) if r.name == "ray"]
    assert Version(ray_version) in ray_requirement.specifier
    assert python in Requirement(f"python{metadata.metadata('photostyle')['Requires-Python']}").specifier


def test_the_raycronjob_runs_exactly_the_apply_rayjob() -> None:
    (rayjob,) = kind(KUBERNETES / "apply-rayjob.yaml", "RayJob")
    (cron,) = kind(KUBERNETES / "apply-raycronjob.yaml", "RayCronJob")
    assert cron["apiVersion"] == rayjob["apiVersion"] == "ray.io/v1"
    assert cron["spec"]["jobTemplate"] == rayjob["spec"]
    assert len(cron["spec"]["schedule"].split()) == 5


def test_the_cronjob_creates_the_apply_rayjob_with_least_privilege() -> None:
    path = KUBERNETES / "apply-cronjob.yaml"
    (cron,) = kind(path, "CronJob")
    (role,) = kind(path, "Role")
    (binding,) = kind(path, "RoleBinding")
    (account,) = kind(path, "ServiceAccount")
    (rayjob,) = kind(KUBERNETES / "apply-rayjob.yaml", "RayJob")
    assert "generateName" in rayjob["metadata"] and "name" not in rayjob["metadata"]  # a new one per night

    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    manifest = container["args"][container["args"].index("-f") + 1]
    assert container["args"][0] == "create"
    assert volumes[next(n for n, p in mounts.items() if manifest.startswith(p + "/"))]["configMap"]["name"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"

    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


# ---- credentials --------------------------------------------------------------------------
_CREDENTIAL_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"aws_secret_access_key"),  # a ~/.aws/credentials entry
    re.compile(r"AWS_(SECRET_ACCESS_KEY|SESSION_TOKEN)\s*[:=]\s*\S"),  # a key given a value
    re.compile(r"^\s*(ENV|ARG)\s+AWS_", re.M),  # keys baked into an image (and its history)
]
_CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def credential_problems(text: str) -> list[str]:
    return [m.group(0) for p in _CREDENTIAL_PATTERNS for m in p.finditer(text)]


def literal_credential_env(node: Any) -> Iterator[str]:
    """Env entries that set a credential variable to a literal (``valueFrom`` a Secret is fine)."""
    if isinstance(node, dict):
        if node.get("name") in _CREDENTIAL_ENV and "value" in node:
            yield node["name"]
        for value in node.values():
            yield from literal_credential_env(value)
    elif isinstance(node, list):
        for item in node:
            yield from literal_credential_env(item)


@pytest.mark.parametrize("path", sorted(p for p in DEPLOY.rglob("*") if p.is_file()), ids=rel)
def test_no_credentials_in_deploy(path: Path) -> None:
    assert credential_problems(path.read_text()) == []
    if path in YAMLS:
        assert [name for doc in documents(path) for name in literal_credential_env(doc)] == []


def test_credential_checks_catch_keys() -> None:
    key_id = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert credential_problems(f"x: {key_id}\n") == [key_id]
    assert credential_problems("aws_secret_access_key = abc") == ["aws_secret_access_key"]
    assert credential_problems("  AWS_SECRET_ACCESS_KEY: abc") == ["AWS_SECRET_ACCESS_KEY: a"]
    assert credential_problems("ENV AWS_ACCESS_KEY_ID=x") == ["ENV AWS_"]
    env = {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}, {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {}}]}
    assert list(literal_credential_env(env)) == ["AWS_SECRET_ACCESS_KEY"]


# ---- image and cluster launcher -----------------------------------------------------------
def test_dockerfile_builds_the_project_on_ray_with_a_cuda_switch() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_IMAGE=rayproject/ray:\S+-cpu$", dockerfile, flags=re.M)
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", dockerfile, flags=re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", dockerfile, flags=re.M)
    copied = " ".join(re.findall(r"^COPY .*$", dockerfile, flags=re.M))
    for needed in ("pyproject.toml", "README.md", "photostyle", "pipeline"):
        assert needed in copied
    assert re.search(r"pip install --no-cache-dir .*/tmp/photostyle", dockerfile)
    assert "pst-pipeline --version" in dockerfile  # the build fails if the install does not import
    ignore = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*" and {"!pyproject.toml", "!README.md", "!photostyle/", "!pipeline/"} <= set(ignore)


def test_cluster_launcher_config_is_valid_with_a_gpu_worker_type() -> None:
    # What `ray up` runs first: fill in the provider's defaults, then check against Ray's schema.
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(raw))
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = [t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["min_workers"] >= 1 for t in gpu_types)
    assert raw["docker"]["worker_image"].endswith("-gpu")
    assert all("Arn" in t["node_config"]["IamInstanceProfile"] for t in types.values())

    broken = {**raw, "max_worker": 8}
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))
