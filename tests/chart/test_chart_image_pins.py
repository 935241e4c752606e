"""One set of versions: the image (images/notebook/Dockerfile, installing uv.lock), the chart's
image reference, environment.yml (for conda users) and pyproject.toml agree.

No build here (tests/image builds and runs the image): these checks are about the files, so that
a changed lock or Dockerfile fails at once until the chart is pinned to a build of it
(`./dev image pin`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from plugins.lock import IMAGE_EXTRAS, locked

#: The JupyterHub major version each jupyterhub chart major version runs (chart 4.x: JupyterHub 5).
JUPYTERHUB_FOR_CHART = {4: 5}
#: conda-forge names whose PyPI package is called differently
PYPI_NAMES = {"python-isal": "isal", "jupyterhub-singleuser": "jupyterhub"}
#: the tests' Python: the image's and environment.yml's minor version
PYTHON = ".".join(map(str, sys.version_info[:3]))


@pytest.fixture(scope="module")
def pins(kit) -> dict:
    env = yaml.safe_load((kit.REPO / "environment.yml").read_text())
    specs: dict[str, SpecifierSet] = {}
    python = None
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"pip sections are not allowed in environment.yml: {dep}"
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        if name == "python":
            python = spec.lstrip("=")
            continue
        specs[canonicalize_name(PYPI_NAMES.get(name, name))] = SpecifierSet(spec)
    build = kit.REPO / "images" / "notebook" / "build-requirements.txt"
    build_pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", build.read_text(), flags=re.M))
    return {"env": env, "specs": specs, "python": python, "build": build_pins,
            "build_text": build.read_text(),
            "pyproject": tomllib.loads((kit.REPO / "pyproject.toml").read_text()),
            "chart": yaml.safe_load((kit.CHART / "Chart.yaml").read_text()),
            "values": yaml.safe_load((kit.CHART / "values.yaml").read_text())}


def test_environment_is_conda_forge_only(pins):
    assert pins["env"]["channels"] == ["conda-forge"]


def test_environment_pins_the_locked_versions(pins):
    """Each pin of environment.yml is what uv.lock installs on the tests' Python, and every
    dependency of the package and of the image's extras is pinned."""
    lock = locked(PYTHON)
    wrong = []
    for name, spec in pins["specs"].items():
        if name == "pip":  # the installer of the package itself, not one of its dependencies
            assert str(spec) == "", spec
            continue
        want = pins["build"][name] if name == "setuptools" else lock.get(name)
        if str(spec) != f"=={want}":
            wrong.append(f"{name}: environment.yml {spec or 'unpinned'}, uv.lock {want}")
    assert wrong == []
    project = pins["pyproject"]["project"]
    direct = [*project["dependencies"],
              *(r for extra in IMAGE_EXTRAS for r in project["optional-dependencies"][extra])]
    missing = {canonicalize_name(Requirement(r).name) for r in direct} - set(pins["specs"])
    assert missing == set()


def test_python_version(pins):
    """environment.yml's Python is the tests' minor version, which pyproject.toml admits."""
    assert pins["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert Version(PYTHON) in SpecifierSet(pins["pyproject"]["project"]["requires-python"])


def image_tag(kit) -> str:
    """What scripts/image.sh tags the image of this checkout: version-<hash of its inputs>."""
    done = subprocess.run(["bash", str(kit.REPO / "scripts" / "image.sh"), "tag"],
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_chart_runs_the_image_of_this_lock_and_dockerfile(pins, kit):
    """The default reference is name:tag@sha256:… of a build of this Dockerfile and uv.lock: the
    tag names their hash (scripts/image.sh), so editing either fails here until `./dev image
    pin` builds and pins again. The pre-puller pulls the same reference."""
    values = pins["values"]
    version = pins["pyproject"]["project"]["version"]
    assert pins["chart"]["appVersion"] == version
    tag = image_tag(kit)
    assert tag.startswith(f"{version}-")
    assert re.fullmatch(rf"{re.escape(tag)}@sha256:[0-9a-f]{{64}}", values["image"]["tag"]), (
        f"values.yaml image.tag {values['image']['tag']!r} is not a build of this Dockerfile "
        f"and uv.lock ({tag}@sha256:…): run `./dev image pin`")
    assert values["jupyterhub"]["singleuser"]["image"] == {
        "name": values["image"]["name"], "tag": values["image"]["tag"]}


def test_hub_and_gateway_versions_match_the_charts(pins):
    deps = {d["name"]: Version(d["version"]) for d in pins["chart"]["dependencies"]}
    lock = locked(PYTHON)
    hub_major = JUPYTERHUB_FOR_CHART[deps["jupyterhub"].major]
    # jupyterhub-singleuser of the image speaks to the hub the jupyterhub chart runs
    assert Version(lock["jupyterhub"]).major == hub_major
    # the image's dask-gateway client is the version of the gateway server the chart installs
    assert Version(lock["dask-gateway"]) == deps["dask-gateway"]
    for needed in ("jupyterlab", "dask-labextension", "dask-gateway", "distributed",
                   "prometheus-client", "jupyter-server-proxy"):
        assert needed in lock, needed


def test_build_tools_are_pinned_with_hashes(pins, kit):
    """uv and setuptools build the image and never ship in it: each pinned with its hashes, uv
    at the version ./dev installs, setuptools within pyproject.toml's build-system."""
    (build,) = [Requirement(r) for r in pins["pyproject"]["build-system"]["requires"]]
    assert Version(pins["build"]["setuptools"]) in build.specifier
    dev_uv = re.search(r"^UV_VERSION=(\S+)$", (kit.REPO / "dev").read_text(), flags=re.M)
    assert pins["build"]["uv"] == dev_uv.group(1)
    for block in re.split(r"\n(?=[a-z])", pins["build_text"].split("\n", 3)[3].strip()):
        assert "--hash=sha256:" in block, block


def test_dockerfile(kit):
    text = (kit.REPO / "images" / "notebook" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    # the standard Debian base, fully qualified: pulled anywhere, made by debootstrap here
    assert args["BASE"] == "docker.io/library/debian:bookworm-slim"
    assert re.findall(r"^FROM (\S+)", text, flags=re.M)[0] == "${BASE}"
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    final_user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    assert final_user == "1000"  # numeric: runAsNonRoot can verify it
    assert args["NB_GID"] == "100"
    values = yaml.safe_load((kit.CHART / "values.yaml").read_text())
    assert values["securityContext"]["pod"]["runAsUser"] == int(final_user)
    assert values["securityContext"]["pod"]["runAsGroup"] == int(args["NB_GID"])
    # the locked environment, with hashes, none resolved at build time
    assert "uv export --frozen" in text and "--require-hashes" in text
    assert f"--extra {IMAGE_EXTRAS[0]}" in text
    assert 'ENTRYPOINT ["tini", "-g", "--"]' in text
    # The build context is the repository: only what the image installs may enter it.
    ignore = [line for line in (kit.REPO / "images" / "notebook" / "Dockerfile.dockerignore")
              .read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"
    copies = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, flags=re.M)
    assert copies
    for path in copies:
        for item in path.split():
            assert any(rule.startswith(f"!{item}") for rule in ignore), item
