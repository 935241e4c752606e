"""One set of versions: environment.yml (the image), pyproject.toml (the package) and the chart
(image tag, dependency versions) agree, and the Dockerfile builds what the chart assumes."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

#: The JupyterHub major version each jupyterhub chart major version runs (chart 4.x: JupyterHub 5).
JUPYTERHUB_FOR_CHART = {4: 5}
#: PyPI names whose conda-forge package is called differently
CONDA_NAMES = {"isal": "python-isal"}


@pytest.fixture(scope="module")
def pins(kit) -> dict:
    env = yaml.safe_load((kit.REPO / "environment.yml").read_text())
    specs: dict[str, SpecifierSet] = {}
    python = None
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"pip sections are not allowed in environment.yml: {dep}"
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        if name == "python":
            python = Version(spec.lstrip("="))
            continue
        specs[canonicalize_name(name)] = SpecifierSet(spec)
    return {"env": env, "specs": specs, "python": python,
            "pyproject": tomllib.loads((kit.REPO / "pyproject.toml").read_text()),
            "chart": yaml.safe_load((kit.CHART / "Chart.yaml").read_text()),
            "values": yaml.safe_load((kit.CHART / "values.yaml").read_text())}


def test_environment_is_conda_forge_only(pins):
    assert pins["env"]["channels"] == ["conda-forge"]


def test_every_package_dependency_is_in_the_image_with_the_same_pin(pins):
    mismatched = []
    for line in pins["pyproject"]["project"]["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(CONDA_NAMES.get(req.name, req.name))
        if name not in pins["specs"]:
            mismatched.append(f"{req.name}: missing from environment.yml")
        elif pins["specs"][name] != req.specifier:
            mismatched.append(f"{req.name}: pyproject {req.specifier} != env {pins['specs'][name]}")
    assert mismatched == []


def test_python_version(pins):
    requires = SpecifierSet(pins["pyproject"]["project"]["requires-python"])
    assert pins["python"] in requires


def test_image_tag_is_the_package_version(pins):
    version = pins["pyproject"]["project"]["version"]
    values = pins["values"]
    assert pins["chart"]["appVersion"] == version
    assert values["image"]["tag"] == version
    assert values["jupyterhub"]["singleuser"]["image"] == {
        "name": values["image"]["name"], "tag": values["image"]["tag"]}


def test_hub_and_gateway_versions_match_the_charts(pins):
    deps = {d["name"]: Version(d["version"]) for d in pins["chart"]["dependencies"]}
    hub_major = JUPYTERHUB_FOR_CHART[deps["jupyterhub"].major]
    singleuser = pins["specs"]["jupyterhub-singleuser"]
    assert Version(f"{hub_major}.0") in singleuser
    assert Version(f"{hub_major + 1}.0") not in singleuser  # never ahead of the hub
    # The image's dask-gateway client accepts the gateway server the chart installs.
    assert deps["dask-gateway"] in pins["specs"]["dask-gateway"]
    for needed in ("jupyterlab", "dask-labextension", "dask-gateway", "distributed", "tini"):
        assert needed in pins["specs"], needed


def test_build_requirement_in_the_image(pins):
    (build,) = [Requirement(r) for r in pins["pyproject"]["build-system"]["requires"]]
    assert pins["specs"][canonicalize_name(build.name)] == build.specifier


def test_dockerfile(kit):
    text = (kit.REPO / "images" / "notebook" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"mambaorg/micromamba:\d+\.\d+\.\d+", base), base  # pinned, not latest
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    final_user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    assert final_user == "1000"  # numeric: runAsNonRoot can verify it
    assert args["NB_GID"] == "100"
    values = yaml.safe_load((kit.CHART / "values.yaml").read_text())
    assert values["securityContext"]["pod"]["runAsUser"] == int(final_user)
    assert values["securityContext"]["pod"]["runAsGroup"] == int(args["NB_GID"])
    assert "environment.yml" in text and "--no-deps" in text
    assert 'ENTRYPOINT ["/usr/local/bin/_entrypoint.sh", "tini"' in text
    # The build context is the repository: only what the image installs may enter it.
    ignore = [line for line in (kit.REPO / "images" / "notebook" / "Dockerfile.dockerignore")
              .read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"
    for path in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for item in path.split():
            assert any(rule.startswith(f"!{item}") for rule in ignore), item
