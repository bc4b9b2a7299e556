"""docker/compose.yml, docker/Dockerfile and .dockerignore, checked as a deployer would want them checked.

No Docker engine is needed: the compose file is read with PyYAML and its
variables substituted the way compose does, then every command is parsed by
the real `campaign` and `celery` command lines, every variable is held against
the settings the engine reads, the health checks are run against the real
servers, and the sandbox is started as its service starts it. Hardening
(capabilities, limits, log rotation, pinned images) is checked by structure,
service by service. What only a running engine could show (that the image
builds, that the limits suffice) is not claimed here.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from pydantic import SecretStr, ValidationError

from engine.accounts import require_services
from engine.cli.app import app as campaign_app
from engine.errors import ConfigurationError
from engine.sandbox.server import NOXITEL_PREFIX
from engine.settings import Settings
from engine.web.webhooks import ROUTES
from tests.fixtures.cli import campaign
from tests.fixtures.sandbox import Sandbox, read_banner, read_line, sandbox_process
from workers.app import QUEUES, SEND_QUEUES

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / "compose.env.example"

#: What a deployer writes in docker/.env: the secrets compose refuses to start without, keys for the sandbox.
DEPLOYMENT = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "CAMPAIGN_WEBHOOK_SECRET": "hook-secret-long-enough-not-to-be-guessed",
    "FLOWER_BASIC_AUTH": "ops:flower-secret",
    "PIXABITS_API_KEY": "sandbox",
    "NOXITEL_API_KEY": "sandbox",
}
#: A test stack's docker/.env: the sandbox's own secrets besides, the receiver's set to the sandbox's signing one.
TEST_STACK = {
    **DEPLOYMENT,
    "CAMPAIGN_WEBHOOK_SECRET": "sandbox-hook-secret-of-a-test-stack-only",
    "SANDBOX_WEBHOOK_SECRET": "sandbox-hook-secret-of-a-test-stack-only",
    "SANDBOX_CONTROL_TOKEN": "sandbox-control-token",
}
#: Names that hold credentials wherever they appear.
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|AUTH")
#: Compose's substitution: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    """A `${NAME:?message}` whose variable is not set: compose refuses to start with this message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def substitute(value: str, env: Mapping[str, str]) -> str:
    """`value` with its variables replaced from `env`, by compose's rules (":" also treats empty as unset)."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["name"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if missing else current or ""
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(name, arg)
            return current or ""
        return current or ""

    return VARIABLE.sub(one, value)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """The compose document with every value's variables substituted (keys are not, as in compose)."""
    if isinstance(node, str):
        return substitute(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


@functools.cache
def raw_compose() -> dict[str, Any]:
    """The compose file as written (YAML anchors and merge keys resolved, variables not)."""
    return yaml.safe_load(COMPOSE.read_text())


def compose(env: Mapping[str, str] = DEPLOYMENT) -> dict[str, Any]:
    """The compose file as `docker compose` sees it with `env` in docker/.env."""
    return interpolate(raw_compose(), env)


def services(env: Mapping[str, str] = DEPLOYMENT) -> dict[str, dict[str, Any]]:
    return compose(env)["services"]


def engine_services(env: Mapping[str, str] = DEPLOYMENT) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (built from docker/Dockerfile)."""
    return {
        name: s for name, s in services(env).items() if (s.get("build") or {}).get("dockerfile") == "docker/Dockerfile"
    }


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in value.items()}


def option(args: list[str], name: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def settings_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        names.update(str(choice) for choice in field.validation_alias.choices)  # type: ignore[union-attr]
    return names


def secret_settings() -> set[str]:
    return {
        str(choice)
        for field in Settings.model_fields.values()
        if SecretStr in _types(field.annotation)
        for choice in field.validation_alias.choices
    }  # type: ignore[union-attr]


def flower_options() -> set[str]:
    """Flower's option names (it reads each from `--name=value` or a FLOWER_NAME variable)."""
    import flower.options  # noqa: F401  (defines them on tornado's option registry)
    from tornado.options import options

    return set(options._options)


def _types(annotation: Any) -> set[Any]:
    return {annotation, *getattr(annotation, "__args__", ())}


# --- the services -----------------------------------------------------------------------------------------------


def test_the_stack_has_every_service_it_needs() -> None:
    found = services()
    assert {"redis", "postgres", "migrate", "web", "beat", "flower", "sandbox"} <= set(found)
    assert set(engine_services()) >= {"migrate", "web", "beat", "flower", "sandbox"}


def test_the_image_is_built_from_the_repository_root() -> None:
    """`docker build -f docker/Dockerfile .` from the root: the context is the folder above docker/."""
    for name, service in engine_services().items():
        assert (DOCKER / service["build"]["context"]).resolve() == ROOT, name
        assert (ROOT / service["build"]["dockerfile"]).is_file(), name
    assert len({service["image"] for service in engine_services().values()}) == 1


def parse_campaign(args: list[str]) -> Any:
    """Parse a `campaign ...` command line as the real command would (unknown commands or options raise)."""
    assert args[0] == "campaign"
    current: Any = typer.main.get_command(campaign_app)
    context = current.context_class(current, info_name="campaign")
    rest = args[1:]
    while True:
        assert rest and not rest[0].startswith("-"), f"{args} names no command"
        sub = current.get_command(context, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {args}"
        if not hasattr(sub, "list_commands"):
            return sub.make_context(rest[0], rest[1:], parent=context)
        context = sub.context_class(sub, info_name=rest[0], parent=context)
        current, rest = sub, rest[1:]


def test_each_campaign_command_is_a_real_command_with_real_options() -> None:
    parsed = {
        name: parse_campaign(command(service))
        for name, service in engine_services().items()
        if command(service)[0] == "campaign"
    }
    assert {"migrate", "web", "sandbox"} <= set(parsed)
    assert command(services()["migrate"]) == ["campaign", "db", "upgrade"]
    assert parsed["web"].params["host"] == "0.0.0.0", "the receiver must be reachable from outside its container"


def _celery_context() -> Any:
    from workers.app import app

    return celery_cli.context_class(
        celery_cli, info_name="celery", obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    )


def celery_commands() -> Iterator[tuple[str, str, list[str]]]:
    """(service, celery subcommand, its arguments) for every service running `celery -A workers.app ...`."""
    for name, service in engine_services().items():
        args = command(service)
        if args[0] == "celery":
            assert args[1:3] == ["-A", "workers.app"], f"{name} runs another Celery app: {args}"
            yield name, args[3], args[4:]


def test_each_celery_command_parses_against_the_projects_app() -> None:
    context = _celery_context()
    seen = []
    for name, sub, rest in celery_commands():
        cli = celery_cli.get_command(context, sub)
        assert cli is not None, f"{name}: `celery {sub}` is not a Celery command (is flower installed?)"
        parsed = cli.make_context(sub, list(rest), parent=context)
        if sub == "flower":  # Flower takes its own (tornado) options, one `--name=value` each
            for arg in parsed.params["tornado_argv"]:
                key = arg.lstrip("-").split("=", 1)[0].replace("_", "-")
                assert key in flower_options(), f"{name}: Flower has no option {arg}"
        seen.append(sub)
    assert sorted(seen).count("beat") == 1, "exactly one beat: two would run every schedule twice"
    assert "flower" in seen and "worker" in seen


def worker_queues() -> dict[str, list[str]]:
    context = _celery_context()
    queues = {}
    for name, sub, rest in celery_commands():
        if sub == "worker":
            parsed = celery_cli.get_command(context, "worker").make_context("worker", list(rest), parent=context)
            queues[name] = parsed.params["queues"] or []
    return queues


def test_every_queue_has_a_worker_and_each_provider_its_own() -> None:
    """A slow or throttled provider must not hold up the other, nor the planning and report tasks."""
    queues = worker_queues()
    consumed = {queue for names in queues.values() for queue in names}
    assert consumed == set(QUEUES), f"nobody consumes {set(QUEUES) - consumed}; unknown: {consumed - set(QUEUES)}"
    for queue in SEND_QUEUES:
        owners = [name for name, names in queues.items() if queue in names]
        assert len(owners) == 1 and queues[owners[0]] == [queue], f"{queue} is not a worker's only queue: {queues}"
    nodes = [option(command(engine_services()[name]), "-n").split("@")[0] for name in queues]
    assert len(set(nodes)) == len(nodes), "two workers with one node name confuse Flower and remote control"


# --- configuration ----------------------------------------------------------------------------------------------


def command_variables(service: dict[str, Any]) -> set[str]:
    """The variables the service's `campaign` command reads as options (`campaign sandbox`'s SANDBOX_*)."""
    args = command(service)
    if args[0] != "campaign":
        return set()
    found: set[str] = set()
    for param in parse_campaign(args).command.params:
        envvar = getattr(param, "envvar", None)
        found.update([envvar] if isinstance(envvar, str) else envvar or [])
    return found


def test_every_variable_set_is_one_the_engine_reads() -> None:
    known = settings_names()
    for name, service in engine_services().items():
        for variable in environment(service):
            if name == "flower" and variable.startswith("FLOWER_"):
                option_name = variable.removeprefix("FLOWER_").lower().replace("_", "-")
                assert option_name in flower_options(), f"Flower has no option for {variable}"
                continue
            assert variable in known | command_variables(service), f"{name} sets {variable}, which nothing reads"


def test_each_service_gets_a_configuration_the_engine_accepts() -> None:
    """Valid values (plan, rate, URLs), and workers that would not refuse to start for want of a shared sandbox."""
    for name, service in engine_services().items():
        try:
            settings = Settings(_env_file=None, **environment(service))  # type: ignore[call-arg]
            if {"CAMPAIGN_BROKER_URL", "PIXABITS_BASE_URL"} <= set(environment(service)):
                require_services(settings)
        except (ValidationError, ConfigurationError) as exc:
            pytest.fail(f"{name} would not start: {exc}")


def _url(service: dict[str, Any], variable: str) -> Any:
    return urlsplit(environment(service)[variable])


def test_the_services_find_each_other_by_name_and_port() -> None:
    found = services()
    database_env = environment(found["postgres"])
    sandbox_port = int(option(command(found["sandbox"]), "--port"))
    web_port = int(option(command(found["web"]), "--port"))
    for name, service in engine_services().items():
        env = environment(service)
        if "CAMPAIGN_DATABASE_URL" in env:
            url = _url(service, "CAMPAIGN_DATABASE_URL")
            assert url.hostname == "postgres" and url.path == "/" + database_env["POSTGRES_DB"], name
            assert (url.username, url.password) == (database_env["POSTGRES_USER"], database_env["POSTGRES_PASSWORD"])
        if "CAMPAIGN_BROKER_URL" in env:
            assert _url(service, "CAMPAIGN_BROKER_URL").hostname == "redis", name
        if "PIXABITS_BASE_URL" in env:
            pixabits, noxitel = _url(service, "PIXABITS_BASE_URL"), _url(service, "NOXITEL_BASE_URL")
            assert (pixabits.hostname, pixabits.port) == ("sandbox", sandbox_port), name
            assert (noxitel.hostname, noxitel.port, noxitel.path) == ("sandbox", sandbox_port, NOXITEL_PREFIX), name
        if "CAMPAIGN_PUBLIC_URL" in env:
            assert (_url(service, "CAMPAIGN_PUBLIC_URL").hostname, _url(service, "CAMPAIGN_PUBLIC_URL").port) == (
                "web",
                web_port,
            ), name
    pushes = urlsplit(option(command(found["sandbox"]), "--webhook-url"))
    assert (pushes.hostname, pushes.port) == ("web", web_port)
    assert ROUTES.get(pushes.path) == "pixabits"


def redis_password(redis: dict[str, Any]) -> str:
    """The password redis-server requires, as its command sets it (a `$NAME` read from its environment)."""
    args = command(redis)
    if args[:2] == ["sh", "-c"]:
        args = shlex.split(args[2])
    return substitute(option(args, "--requirepass"), environment(redis))


def test_redis_wants_a_password_and_every_client_of_it_has_that_password() -> None:
    found = services()
    password = redis_password(found["redis"])
    assert password == DEPLOYMENT["REDIS_PASSWORD"]
    health = shlex.split(" ".join(str(part) for part in found["redis"]["healthcheck"]["test"][1:]))
    auth = [word.split("=", 1)[1] for word in health if word.startswith("REDISCLI_AUTH=")]
    assert auth and substitute(auth[0], environment(found["redis"])) == password, "the health check would be refused"
    clients = [name for name, service in engine_services().items() if "CAMPAIGN_BROKER_URL" in environment(service)]
    assert {"beat", "flower", *worker_queues()} <= set(clients)
    for name in clients:
        assert _url(found[name], "CAMPAIGN_BROKER_URL").password == password, name


def test_secrets_are_required_from_the_environment_never_written_in_the_file() -> None:
    """Each secret is `${NAME:?...}`: no default that would become everyone's password. Only a service a
    production start leaves out (one with a profile) may leave its own unset, as `${NAME:-}`, and refuse or
    make one up itself: compose reads the whole file before it picks services, so requiring them would stop
    every start. No secret on a command line or in a health check, where `docker inspect` and `ps` show it."""
    secret_names = secret_settings() | {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    required = r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}"
    for name, service in raw_compose()["services"].items():
        for variable, value in environment(service).items():
            if variable in secret_names or SECRET_NAME.search(variable):
                unset = r"|\$\{" + variable + r":-\}" if service.get("profiles") else ""
                assert re.fullmatch(r"\$\{" + variable + r":\?[^}]*\}" + unset, value), (
                    f"{name}: {variable} must be ${{{variable}:?...}}, not {value!r}"
                )
            userinfo = re.match(r"[a-z+]+://[^:/@]+:(.+)@[^@]+$", value)
            if userinfo:
                assert re.fullmatch(required, userinfo[1]), f"{name}: a password written into {variable}"
    secrets = {value for key, value in TEST_STACK.items() if SECRET_NAME.search(key) and not key.endswith("_API_KEY")}
    for name, service in services(TEST_STACK).items():
        shown = [*(command(service) if "command" in service else []), *strings(service.get("healthcheck", {}))]
        for argument in shown:
            assert "api-key" not in argument, f"{name}: {argument}"
            assert not any(secret in argument for secret in secrets), f"{name}: a secret in {argument!r}"


def test_compose_refuses_to_start_without_each_secret() -> None:
    for variable in DEPLOYMENT:
        if not SECRET_NAME.search(variable):
            continue
        without = {key: value for key, value in DEPLOYMENT.items() if key != variable}
        with pytest.raises(MissingVariable) as refused:
            compose(without)
        assert refused.value.name == variable
        with pytest.raises(MissingVariable):  # an empty value is as good as none
            compose({**without, variable: ""})


def test_the_example_env_file_lists_every_required_variable() -> None:
    """Someone who fills in docker/compose.env.example has all that compose asks for, secrets left to fill."""
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    required = {
        match["name"] for text in strings(raw_compose()) for match in VARIABLE.finditer(text) if match["op"] == ":?"
    }
    assert required <= set(example), f"missing from the example: {required - set(example)}"
    for variable, value in example.items():
        if SECRET_NAME.search(variable) and not variable.endswith("_API_KEY"):
            assert value == "", f"the example must not suggest a value for {variable}"
        if variable.endswith("_API_KEY"):
            assert value == "sandbox", "the only key an example may carry is the sandbox's own"


# --- the sandbox: test stacks only, with secrets of its own ---------------------------------------------------------


def started(*profiles: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose [--profile P ...] up` starts: those without profiles and those of P."""
    return {
        name: service
        for name, service in services(TEST_STACK).items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def test_a_production_start_runs_no_sandbox_and_needs_none_of_its_settings() -> None:
    production = started()
    assert "sandbox" not in production and "cli" not in production
    assert {"redis", "postgres", "migrate", "web", "beat", "flower", *worker_queues()} <= set(production)
    for name, service in production.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in production or rule.get("required") is False, f"{name} would not start without {target}"
    assert not [key for key in DEPLOYMENT if key.startswith("SANDBOX_")]
    compose(DEPLOYMENT)  # the sandbox's secrets are not asked for
    test_stack = started("sandbox")
    for name in worker_queues():
        assert test_stack[name]["depends_on"]["sandbox"]["condition"] == "service_healthy", name


def test_the_sandbox_holds_no_production_secret() -> None:
    """It signs with SANDBOX_WEBHOOK_SECRET; a production receiver's secret never reaches it."""
    production = {**DEPLOYMENT, "SANDBOX_WEBHOOK_SECRET": "sandbox-only-secret"}
    sandbox = services(production)["sandbox"]
    env = environment(sandbox)
    assert set(env) <= command_variables(sandbox) and all(variable.startswith("SANDBOX_") for variable in env)
    secrets = {value for key, value in DEPLOYMENT.items() if SECRET_NAME.search(key) and not key.endswith("_API_KEY")}
    assert not secrets & set(env.values())
    test_stack = services(TEST_STACK)
    signs_with = environment(test_stack["sandbox"])["SANDBOX_WEBHOOK_SECRET"]
    assert signs_with == environment(test_stack["web"])["CAMPAIGN_WEBHOOK_SECRET"], "a test stack pairs them"


def _here(service: dict[str, Any]) -> list[str]:
    """The service's `campaign sandbox` options but where it listens (here: loopback, a free port)."""
    options = command(service)[2:]
    pairs = zip(options[::2], options[1::2], strict=True)
    return [word for pair in pairs if pair[0] not in ("--host", "--port") for word in pair]


def test_the_sandbox_service_wants_its_control_token() -> None:
    service = services(TEST_STACK)["sandbox"]
    with sandbox_process(*_here(service), env={**os.environ, **environment(service)}) as (_, url):
        sandbox = Sandbox(url, TEST_STACK["SANDBOX_CONTROL_TOKEN"])
        assert sandbox.call("/_sandbox/stats")[0] == 401
        assert sandbox.call("/_sandbox/stats", bearer="sandbox")[0] == 401  # a provider key is not the token
        assert sandbox.call("/_sandbox/stats", bearer=sandbox.token)[0] == 200
        assert sandbox.admin("config")["webhook_secret"] is True


def test_the_sandbox_service_without_its_token_makes_one_up_and_logs_it() -> None:
    service = services({**TEST_STACK, "SANDBOX_CONTROL_TOKEN": ""})["sandbox"]
    with sandbox_process(*_here(service), env={**os.environ, **environment(service)}) as (process, url):
        token = read_line(process).rsplit(" ", 1)[-1].strip()
        assert len(token) >= 16
        sandbox = Sandbox(url, token)
        assert sandbox.call("/_sandbox/stats")[0] == 401
        assert sandbox.call("/_sandbox/stats", bearer=token)[0] == 200


def test_the_sandbox_service_refuses_to_start_without_its_webhook_secret() -> None:
    service = services({**TEST_STACK, "SANDBOX_WEBHOOK_SECRET": ""})["sandbox"]
    done = campaign({**os.environ, **environment(service)}, "sandbox", *_here(service), "--port", "0", timeout=60)
    assert done.returncode == 1
    assert "SANDBOX_WEBHOOK_SECRET" in done.stderr and "Traceback" not in done.stderr


# --- hardening ----------------------------------------------------------------------------------------------------

#: How each image pulled numbers its releases: an exact version has this many parts (PostgreSQL: major.minor).
VERSION_PARTS = {"redis": 3, "postgres": 2}
SIZE = re.compile(r"(?P<number>\d+)(?P<unit>[kmg]?)b?", re.IGNORECASE)


def size(text: str) -> int:
    """Bytes of a compose size (`512m`, `1g`, `10m`)."""
    match = SIZE.fullmatch(str(text))
    assert match, f"not a size: {text!r}"
    return int(match["number"]) * 1024 ** " kmg".index(match["unit"].lower() or " ")


def test_every_service_runs_without_capabilities_or_privilege_gain() -> None:
    """An image whose entrypoint starts as root (to chown its data, then switch user) would need capabilities
    back: such services run as the image's own user instead."""
    for name, service in services(TEST_STACK).items():
        assert service.get("cap_drop") == ["ALL"], name
        assert not service.get("cap_add"), f"{name} adds back {service['cap_add']}"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        user = str(service.get("user", "")).split(":")[0]
        assert user not in ("root", "0"), name
        assert user or name in engine_services(), f"{name} starts as root (the engine image has its own USER)"


def test_every_service_has_memory_and_process_limits() -> None:
    for name, service in services(TEST_STACK).items():
        assert 128 * 2**20 <= size(service.get("mem_limit", "0")) <= 8 * 2**30, name
        assert isinstance(service.get("pids_limit"), int) and 64 <= service["pids_limit"] <= 4096, name
    redis = services()["redis"]
    maxmemory = option(shlex.split(command(redis)[2]), "--maxmemory")
    assert size(maxmemory) < size(redis["mem_limit"]), "Redis must refuse writes before the kernel kills it"


def test_every_service_rotates_its_logs() -> None:
    for name, service in services(TEST_STACK).items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        options = logging.get("options", {})
        assert isinstance(options.get("max-size"), str) and size(options["max-size"]) <= 100 * 2**20, name
        assert isinstance(options.get("max-file"), str) and 1 <= int(options["max-file"]) <= 20, name


def test_every_image_pulled_is_pinned_to_an_exact_version() -> None:
    for name, service in services(TEST_STACK).items():
        if name in engine_services():
            continue
        repository, _, tag = service["image"].partition(":")
        version = tag.split("-")[0]
        assert repository in VERSION_PARTS, f"{name}: {service['image']}"
        assert re.fullmatch(r"\d+(?:\.\d+)*", version), f"{name}: {service['image']}"
        assert version.count(".") + 1 == VERSION_PARTS[repository], f"{name}: {service['image']} floats"


# --- exposure, order and health -----------------------------------------------------------------------------------


def test_the_sandbox_and_redis_are_reachable_only_inside_the_stack() -> None:
    """Behind a control token and a password, the sandbox and Redis still keep to the stack: no port of theirs
    reaches the host."""
    found = services()
    for name in ("sandbox", "redis"):
        assert "ports" not in found[name], f"{name} publishes a port"
        assert found[name].get("network_mode") is None, f"{name} shares the host's network"
    assert option(command(found["sandbox"]), "--host") == "0.0.0.0"  # the other containers must reach it
    assert all(str(port).startswith("127.0.0.1:") for port in found["flower"].get("ports", [])), (
        "Flower shows every task's arguments: loopback of the host only"
    )


def test_the_schema_migration_runs_before_anything_uses_the_database() -> None:
    """PostgreSQL is never migrated on the fly: web and workers refuse a database behind the newest schema."""
    found = services()
    migrate = found["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no", "a one-shot job that restarts never completes"
    gated = {"web", "beat", *worker_queues()}
    for name in gated:
        assert found[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    for name, service in engine_services().items():
        if "CAMPAIGN_DATABASE_URL" in environment(service) and name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_health_checks_exist_where_others_wait_on_them() -> None:
    found = services()
    for name in ("redis", "postgres", "web", "sandbox", "flower"):
        assert found[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, service in found.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions starts it too early"
        for target, rule in depends.items():
            assert target in found, f"{name} depends on a service that does not exist: {target}"
            if rule["condition"] == "service_healthy":
                assert found[target].get("healthcheck"), f"{name} waits for {target}, which has no health check"


def _listening_port(service: dict[str, Any]) -> int:
    args = command(service)
    return int(option(args, "--port"))


def run_health_check(service: dict[str, Any], port: int) -> int:
    """Run a service's health check here, against a server on `port` instead of the container's port."""
    test = [str(part) for part in service["healthcheck"]["test"]]
    assert test[0] == "CMD", "exec form: no shell needed in a slim image"
    inside = f"127.0.0.1:{_listening_port(service)}"
    args = [sys.executable if arg == "python" else arg.replace(inside, f"127.0.0.1:{port}") for arg in test[1:]]
    assert any(f"127.0.0.1:{port}" in arg for arg in args), f"the check does not probe the port it listens on: {test}"
    return subprocess.run(args, capture_output=True, timeout=30).returncode


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_sandbox_health_check_passes_on_a_sandbox_and_fails_without_one(sandbox_server: Sandbox) -> None:
    service = services()["sandbox"]
    assert run_health_check(service, urlsplit(sandbox_server.url).port) == 0
    assert run_health_check(service, _closed_port()) != 0


def test_the_web_health_check_passes_on_the_receiver_and_fails_without_one(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CAMPAIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'campaigns.db'}",
        "CAMPAIGN_WEBHOOK_SECRET": DEPLOYMENT["CAMPAIGN_WEBHOOK_SECRET"],
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "web", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        port = urlsplit(read_banner(process)).port
        service = services()["web"]
        assert run_health_check(service, port) == 0
        assert run_health_check(service, _closed_port()) != 0
    finally:
        process.terminate()
        process.wait(10)


# --- the image --------------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


def final_stage() -> list[Instruction]:
    instructions = dockerfile()
    last = max(i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM")
    return instructions[last:]


def test_the_image_starts_from_one_exact_slim_python_3_11() -> None:
    bases = {instruction.arguments.split()[0] for instruction in dockerfile() if instruction.keyword == "FROM"}
    assert len(bases) == 1, f"the stages start from different Pythons: {bases}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(?:@sha256:[0-9a-f]{64})?", bases.pop())


def test_the_image_runs_as_an_unprivileged_user() -> None:
    stage = final_stage()
    users = [i for i, instruction in enumerate(stage) if instruction.keyword == "USER"]
    assert users, "no USER: every service would run as root"
    user = stage[users[-1]].arguments.split(":")[0]
    assert user not in ("root", "0")
    runs = [i for i, instruction in enumerate(stage) if instruction.keyword == "RUN"]
    assert max(runs) < users[-1], "a RUN after USER would need root"


def test_the_image_bakes_in_no_secret() -> None:
    for instruction in dockerfile():
        if instruction.keyword in ("ENV", "ARG"):
            assigned = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", instruction.arguments)
            names = assigned or [instruction.arguments.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name.upper()), f"{instruction.keyword} {name} in the image"
        if instruction.keyword in ("COPY", "ADD"):
            assert ".env" not in instruction.arguments.split()[:-1]


def _copied_sources() -> list[str]:
    sources = []
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            sources.extend(instruction.arguments.split()[:-1])
    return sources


def test_the_image_installs_the_package_without_its_dev_extra() -> None:
    text = " ".join(instruction.arguments for instruction in dockerfile() if instruction.keyword == "RUN")
    assert re.search(r"pip (?:install|wheel)\b[^&;]*\s\.(?:\s|$)", text), "the repository's package is not built"
    assert any("pip install" in instruction.arguments for instruction in final_stage() if instruction.keyword == "RUN")
    assert "[dev]" not in DOCKERFILE.read_text()
    assert not re.search(r"pip install[^&;]*\s(?:-e|--editable)\s", text), "an editable install needs the source"


def test_the_image_gets_every_file_the_package_is_built_from() -> None:
    """Each package folder (through links: engine/config is config/), pyproject.toml and the readme are copied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    for package in project["tool"]["setuptools"]["packages"]:
        needed.add((ROOT / package.replace(".", "/")).resolve().relative_to(ROOT).as_posix())
    copied = _copied_sources()
    patterns = dockerignore()
    for path in needed:
        assert any(path == source or path.startswith(source.rstrip("/") + "/") for source in copied), (
            f"{path} is not copied into the image"
        )
        assert not ignored(path, patterns), f"{path} is excluded by .dockerignore"


def dockerignore() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _pattern(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part) or fnmatch.translate(part)[4:-3] for part in parts if part))


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is out when it, or a folder above it, matches; the last matching pattern wins."""
    prefixes = [path.split("/")[: i + 1] for i in range(path.count("/") + 1)]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!"))
        if any(regex.fullmatch("/".join(prefix)) for prefix in prefixes):
            result = not negated
    return result


def test_the_build_context_leaves_out_local_and_secret_files() -> None:
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "docker/.env",
        "config/.env",
        "engine/__pycache__/cli.pyc",
        "tests/benchmarks/RESULTS.md",
        "campaigns.db",
        ".pytest_cache/v",
        "contacts.rejects.csv",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the build"
    # What a clean checkout holds under the copied paths (files a run leaves beside them are not the project's).
    shipped = subprocess.run(
        ["git", "ls-files", "--", *_copied_sources()], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(shipped) > 20
    for path in shipped:
        assert not ignored(path, patterns), f"{path} is needed in the image but excluded by .dockerignore"
