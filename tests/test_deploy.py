"""The deploy files say what the app really does: its command, port, health route, user, variables, drain.

No Docker engine or cluster here: the files are parsed and checked against the app's routes and defaults.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from starlette.routing import Route

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.config import load_settings
from gateway.drain import MOVED_CALLS_WAIT_S
from gateway.records import STOP_TIMEOUT_S
from gateway.server import uvicorn_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = load_settings({}, env_file=None)
HEROKU_KILL_AFTER_S = 30  # Heroku sends SIGKILL this long after SIGTERM


def app_routes() -> dict[str, set[str]]:
    app = create_app(DEFAULTS)
    return {r.path: set(r.methods or ()) for r in app.routes if isinstance(r, Route)}


def env_vars_read_by_config() -> set[str]:
    source = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r'(?:env\.get\(|_\w+\(env, )"([A-Z_]+)"', source))


def shutdown_budget_s(grace_s: float) -> float:
    """SIGTERM to exit, at worst: the grace period, moving calls, uvicorn's graceful shutdown, the records."""
    uvicorn_s = uvicorn_config(create_app(DEFAULTS), "x", 0).timeout_graceful_shutdown
    return grace_s + MOVED_CALLS_WAIT_S + uvicorn_s + STOP_TIMEOUT_S


def test_the_command_everyone_runs_is_a_real_command():
    assert (ROOT / "Procfile").read_text().strip() == "web: gateway serve"
    assert build_parser().parse_args(["serve"]).command == "serve"


def test_dockerfile_runs_gateway_serve_as_non_root_with_a_working_health_check():
    lines = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)

    assert json.loads(by_name["CMD"][-1]) == ["gateway", "serve"]  # exec form: gateway gets SIGTERM itself
    user = by_name["USER"][-1].strip()
    assert user not in {"root", "0"} and "--uid " + user in " ".join(by_name["RUN"])
    assert by_name["EXPOSE"] == [str(DEFAULTS.port)]
    env = dict(item.split("=", 1) for item in shlex.split(" ".join(by_name["ENV"])))
    assert env["PORT"] == str(DEFAULTS.port)
    # the default SQLite records go to a directory the non-root user owns
    db_dir = str(Path(env["DATABASE_URL"].removeprefix("sqlite:///")).parent)
    assert f"mkdir {db_dir}" in " ".join(by_name["RUN"]) and f"chown gateway {db_dir}" in " ".join(
        by_name["RUN"]
    )
    check = by_name["HEALTHCHECK"][-1]
    path = re.search(r'\{os\.environ\.get\(\\"PORT\\", \\"(\d+)\\"\)\}(/\w+)', check)
    assert path is not None, check
    assert path.group(1) == str(DEFAULTS.port) and "GET" in app_routes()[path.group(2)]
    copied = " ".join(by_name["COPY"])
    assert "pyproject.toml" in copied and "setup.py" in copied and "gateway" in copied
    # the install has a C compiler, so the image runs the compiled resampler (gateway/_fir.c)
    (install,) = [run for run in by_name["RUN"] if "pip install ." in run]
    assert install.index("gcc") < install.index("pip install .")


def load_manifests() -> dict[str, dict]:
    folder = ROOT / "deploy" / "kubernetes"
    docs = {}
    for name in ("deployment", "service", "hpa"):
        (doc,) = list(yaml.safe_load_all((folder / f"{name}.yaml").read_text()))
        docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_probe_the_real_routes_and_leave_time_to_drain():
    docs = load_manifests()
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    routes = app_routes()

    # the port the app listens on
    assert ports == {"http": int(env.get("PORT", DEFAULTS.port))}
    assert "command" not in container and "args" not in container  # the image's `gateway serve`
    # readiness on /healthz (503 while draining); liveness must not kill a draining pod
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz" and "GET" in routes[ready["path"]] and ready["port"] in ports
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        "httpGet" not in container["livenessProbe"]
        and container["livenessProbe"]["tcpSocket"]["port"] in ports
    )
    # preStop starts the drain and waits for it; the pod is killed only after the whole drain
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop
    grace_s = float(env["DRAIN_GRACE_SECONDS"])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= shutdown_budget_s(grace_s)
    # the image's non-root user
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    # secrets hold what must not be in a manifest
    assert not {"DATABASE_URL", "TWILIO_AUTH_TOKEN", "GEMINI_API_KEY", "CALLS_API_TOKEN"} & env.keys()
    assert container["envFrom"][0]["secretRef"]["name"]
    assert set(env) <= env_vars_read_by_config()

    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] in ports
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_heroku_button_describes_every_variable_and_drains_before_the_kill():
    app = json.loads((ROOT / "app.json").read_text())
    described = app["env"]
    # Heroku sets PORT, and the PostgreSQL add-on sets DATABASE_URL
    assert set(described) == env_vars_read_by_config() - {"PORT", "DATABASE_URL"}
    for name, spec in described.items():
        assert len(spec["description"]) > 15, name
    assert {a["plan"].split(":")[0] for a in app["addons"]} == {"heroku-postgresql"}
    assert app["formation"]["web"]["quantity"] >= 1
    grace_s = float(described["DRAIN_GRACE_SECONDS"]["value"])
    assert grace_s == DEFAULTS.drain_grace_s
    assert shutdown_budget_s(grace_s) <= HEROKU_KILL_AFTER_S
    assert described["CALLS_API_TOKEN"].get("generator") == "secret"
    assert (ROOT / "requirements.txt").read_text().split() == ["."]  # Heroku installs the project itself


def test_readme_documents_every_variable_and_command():
    readme = (ROOT / "README.md").read_text()
    for name in env_vars_read_by_config():
        assert f"`{name}`" in readme, name
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert f"`gateway {command}" in readme, command


def sh_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, re.S)


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quick_start_installs_in_a_venv_and_ci_runs_its_test_command_as_written():
    section = readme_section("Quick start")
    demo, tests = sh_blocks(section)[0].strip().splitlines()
    for command in (demo, tests):
        steps = [step.strip() for step in command.split("&&")]
        # Debian's own python3 refuses `pip install` outside a virtual environment (externally managed)
        assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], steps
        assert steps[2:] and steps[2].startswith("pip install -e "), steps
    assert demo.endswith("&& gateway demo") and build_parser().parse_args(["demo"]).command == "demo"
    assert tests.endswith("&& pip install -e '.[test]' && pytest")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("pytest") for dep in project["optional-dependencies"]["test"])
    # the one line of what they assume names the Python they need
    minimum = project["requires-python"].removeprefix(">=")
    assert f"`python3` of {minimum} or newer" in " ".join(section.split())
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith(tests + " ") or line == tests for line in ci), "CI runs the README's tests"


def test_heroku_route_uses_heroku_urls_and_dyno_types_that_keep_calls():
    section = readme_section("Running it for real")
    heroku = section[section.index("**Heroku.**") : section.index("**Container.**")]
    app_json = (ROOT / "app.json").read_text()
    app = json.loads(app_json)
    # Apps created since 14 June 2023 live at APPNAME-<12 random characters>.herokuapp.com, known only once
    # the app exists: no hint or example may promise APPNAME.herokuapp.com, and the button cannot ask for it.
    for text in (heroku, app_json):
        for host in re.findall(r"([^\s/\"'`(]+)\.herokuapp\.com", text):
            assert re.fullmatch(r"[a-z0-9<>-]+-(<random>|[0-9a-f]{12})", host), host
    assert app["env"]["PUBLIC_URL"].get("required") is not True
    # A draining dyno's calls move to another one: Eco and Basic run one dyno per process type, no preboot.
    one_dyno_only = {"eco", "basic"}
    web = app["formation"]["web"]
    assert web["quantity"] >= 2 and web["size"] not in one_dyno_only
    commands = " ".join(sh_blocks(heroku))
    for count, size in re.findall(r"heroku ps:scale web=(\d+)(?::([\w-]+))?", commands):
        assert int(count) == 1 or size.lower() not in one_dyno_only | {""}, (count, size)
    assert "heroku features:enable preboot" in commands
    (plan,) = re.findall(r"heroku addons:create (\S+)", commands)
    assert [a["plan"] for a in app["addons"]] == [plan]


def test_docs_and_docstrings_cite_only_files_in_the_repository():
    sources = [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "gateway").rglob("*.py")]
    for source in sources:
        text = source.read_text()
        cited = re.findall(r"(?<![\w./])\.\./[\w./-]+", text)
        if source.suffix == ".md":
            cited += re.findall(r"\]\(([^)#\s]+)", text)  # relative links
        for target in cited:
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            found = (source.parent / target).resolve()
            assert found.is_relative_to(ROOT) and found.exists(), f"{source.relative_to(ROOT)} cites {target}"


@pytest.mark.parametrize("platform", ["developer", "vertex"])
def test_the_heroku_buttons_presets_start_with_every_model_of_either_platform(platform):
    """A value app.json fills in is one the user did not choose: it must not stop start-up once they pick
    another model or platform (it once forced proactive audio, affective dialog and a Developer API model)."""
    from gateway.live.protocol import MODELS_BY_PLATFORM

    env = json.loads((ROOT / "app.json").read_text())["env"]
    presets = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    chosen = {"GEMINI_PLATFORM": platform, "TWILIO_AUTH_TOKEN": "token", "PUBLIC_URL": "https://example.com"}
    chosen |= (
        {"GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_CLOUD_LOCATION": "us-central1"} if platform == "vertex" else {}
    )
    chosen |= {"GEMINI_API_KEY": "key"} if platform == "developer" else {}
    assert load_settings(presets | chosen, env_file=None).live.model in MODELS_BY_PLATFORM[platform]
    for model in MODELS_BY_PLATFORM[platform]:
        assert load_settings(presets | chosen | {"GEMINI_MODEL": model}, env_file=None).live.model.endswith(
            model
        )
    # Nor once they pick another value of a setting the presets depend on: every frame as it comes.
    every_frame = load_settings(presets | chosen | {"LIVE_QUIET_CHUNK_MS": "20"}, env_file=None)
    assert every_frame.live_speech_chunk_ms == 20
