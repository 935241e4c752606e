"""The hub's extraConfig snippet, run by the jupyterhub chart's own jupyterhub_config.py.

The chart is rendered with the real jupyterhub chart; z2jh's rendered jupyterhub_config.py and
z2jh.py run in the hub pod's files (its ConfigMap and Secret, the Secret's values.yaml) and
environment, which executes our snippet exactly as the hub pod does (see tests/plugins/chart.py).
Then a real KubeSpawner renders the user pod that Kubernetes would receive. Typos in the snippet
fail: unknown config keys are reported, and the pod is built by KubeSpawner itself.
"""

from __future__ import annotations

import json

import pytest
from plugins.chart import DEFAULT_IMAGE

# Same as the conftest's (the release and namespace the chart is rendered with).
RELEASE = "hub"
NAMESPACE = "neuro"

DATA_KEYS = {
    "NEUROPIXELS_DASK__CACHE__URL",
    "NEUROPIXELS_DASK__S3__ANON",
    "NEUROPIXELS_DASK__S3__REGION",
    "NEUROPIXELS_DASK__S3__REQUESTER_PAYS",
}


def container_env(pod: dict) -> dict[str, dict]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def run_hub_snippets(c, values: dict) -> None:
    """hub.extraConfig entries in key order, each with only `c` in scope: what `hub local` does
    with a config that no z2jh prepared (the snippet's own guards are tested with it)."""
    for key, code in sorted(values["jupyterhub"]["hub"]["extraConfig"].items()):
        exec(compile(code, f"hub.extraConfig.{key}", "exec"), {"c": c})


#: Every configurable class that z2jh's jupyterhub_config.py and our snippet configure.
def hub_classes() -> list[type]:
    from jupyterhub.app import JupyterHub
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
    from jupyterhub.crypto import CryptKeeper
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from kubespawner import KubeSpawner

    # The login of the value sets (the trial mode, helm/examples/trial.yaml).
    return [JupyterHub, KubeSpawner, ConfigurableHTTPProxy, CryptKeeper,
            SharedPasswordAuthenticator]


@pytest.mark.parametrize("value_set", ["defaults", "secret-credentials", "iam-role",
                                       "custom-endpoint", "profiles"])
def test_snippet_is_valid_hub_config(kit, hub_for, value_set):
    from jupyterhub.app import JupyterHub
    from kubespawner import KubeSpawner

    c, _, settings = hub_for(value_set)
    assert kit.configurable_keys_problems(c, hub_classes()) == []
    hub = JupyterHub(config=c)
    assert hub.spawner_class is KubeSpawner
    (service,) = [s for s in hub.services if s["name"] == "dask-gateway"]
    assert service["url"] == settings["gateway"]["serviceUrl"]
    assert service["url"] == f"http://traefik-{RELEASE}-dask-gateway.{NAMESPACE}:80"
    assert service["display"] is False


def test_typo_in_snippet_is_caught(kit, hub_for):
    """The check above is not vacuous: a misspelt trait is reported."""
    snippet = kit.values_for("defaults")["jupyterhub"]["hub"]["extraConfig"]["10-neuropixels-hub"]
    assert "spawner.service_account = " in snippet
    typo = snippet.replace("spawner.service_account = ", "spawner.service_acount = ")
    c, _, _ = hub_for("defaults", values={
        "jupyterhub": {"hub": {"extraConfig": {"10-neuropixels-hub": typo}}}})
    assert kit.configurable_keys_problems(c, hub_classes()) == [
        "c.KubeSpawner.service_acount: not a configurable trait"]


def test_user_pod_defaults(kit, hub_for):
    c, objects, settings = hub_for("defaults")
    pod = kit.user_pod(c)
    spec = pod["spec"]
    (container,) = spec["containers"]
    env = container_env(pod)

    assert container["image"] == DEFAULT_IMAGE == settings["image"]["ref"]
    assert env["DASK_GATEWAY__ADDRESS"]["value"] == "http://proxy-public/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"]["value"] == (
        f"gateway://traefik-{RELEASE}-dask-gateway.{NAMESPACE}:80")
    assert env["DASK_GATEWAY__PUBLIC_ADDRESS"]["value"] == "/services/dask-gateway/"
    assert env["DASK_GATEWAY__AUTH__TYPE"]["value"] == "jupyterhub"
    assert {k for k in env if k.startswith("NEUROPIXELS_DASK__")} == DATA_KEYS
    assert env["NEUROPIXELS_DASK__CACHE__URL"]["value"] == (
        "s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/")
    assert env["NEUROPIXELS_DASK__S3__ANON"]["value"] == "true"
    assert env["NEUROPIXELS_DASK__S3__REGION"]["value"] == "us-west-2"
    assert not any(k.startswith("AWS_") for k in env)

    (sa,) = kit.find(objects, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"] == f"{RELEASE}-neuropixels-hub-user"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["runAsUser"] == 1000
    assert float(container["resources"]["limits"]["cpu"]) == 2
    assert int(container["resources"]["limits"]["memory"]) == 4 * 2**30


def test_user_pod_gets_credentials_by_reference(kit, hub_for):
    c, _, _ = hub_for("secret-credentials")
    env = container_env(kit.user_pod(c))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[var] == {"name": var, "valueFrom": {"secretKeyRef": {
            "name": "neuropixels-s3", "key": var}}}
    assert "AWS_SESSION_TOKEN" not in env
    assert env["NEUROPIXELS_DASK__S3__ANON"]["value"] == "false"
    assert env["NEUROPIXELS_DASK__CACHE__URL"]["value"] == "s3://my-lab-neuropixels/ecephys-cache/"


def test_user_pod_custom_endpoint_and_renamed_keys(kit, hub_for):
    c, _, _ = hub_for("custom-endpoint")
    env = container_env(kit.user_pod(c))
    assert env["NEUROPIXELS_DASK__S3__ENDPOINT_URL"]["value"] == (
        "http://minio.minio.svc.cluster.local:9000")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-neuropixels", "key": "accesskey"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secretkey"


def test_user_pod_iam_role_identity(kit, hub_for):
    c, objects, _ = hub_for("iam-role")
    pod = kit.user_pod(c)
    (sa,) = kit.find(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/neuropixels-reader"}
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    env = container_env(pod)
    assert env["NEUROPIXELS_DASK__S3__REQUESTER_PAYS"]["value"] == "true"
    assert not any(k.startswith("AWS_") for k in env)


@pytest.mark.parametrize("profile,cpu,memory_gib", [("small", 2, 4), ("large", 8, 32)])
def test_profiles_keep_the_one_image(kit, hub_for, profile, cpu, memory_gib):
    c, _, settings = hub_for("profiles")
    pod = kit.user_pod(c, {"profile": profile})
    (container,) = pod["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert (float(limits["cpu"]), int(limits["memory"])) == (cpu, memory_gib * 2**30)
    assert container["image"] == settings["image"]["ref"]
    assert set(container_env(pod)) >= DATA_KEYS


def test_operator_gateway_address_wins_but_data_settings_do_not(kit, hub_for):
    """setdefault for DASK_GATEWAY__*, forced NEUROPIXELS_DASK__* (notebook and workers agree)."""
    c, _, _ = hub_for("defaults", values={"jupyterhub": {"singleuser": {"extraEnv": {
        "DASK_GATEWAY__ADDRESS": "http://elsewhere/services/dask-gateway",
        "NEUROPIXELS_DASK__CACHE__URL": "s3://not-what-workers-read/",
    }}}})
    env = container_env(kit.user_pod(c))
    assert env["DASK_GATEWAY__ADDRESS"]["value"] == "http://elsewhere/services/dask-gateway"
    assert env["NEUROPIXELS_DASK__CACHE__URL"]["value"].startswith("s3://allen-brain-observatory/")


def test_https_proxy_uses_internal_http_service(kit):
    """With proxy.https (Let's Encrypt), the jupyterhub chart adds the Service proxy-http; the
    hub pod then has PROXY_HTTP_SERVICE_HOST/PORT, and notebooks reach the gateway through it
    (plain http inside the cluster) instead of through the TLS port."""
    release = kit.release(values={"jupyterhub": {"proxy": {"https": {
        "enabled": True, "hosts": ["hub.example.org"],
        "letsencrypt": {"contactEmail": "admin@example.org"}}}}})
    release.require_subcharts()
    (service,) = release.find("Service", "proxy-http")
    host = release.service_env()["PROXY_HTTP_SERVICE_HOST"]
    c = release.hub_config()
    assert c.KubeSpawner.environment["DASK_GATEWAY__ADDRESS"] == (
        f"http://{host}:{service['spec']['ports'][0]['port']}/services/dask-gateway")
    plain = kit.release().hub_config()
    assert plain.KubeSpawner.environment["DASK_GATEWAY__ADDRESS"] == (
        "http://proxy-public/services/dask-gateway")


def test_notebook_network_policy_selects_user_pods(kit, hub_for):
    c, objects, _ = hub_for("defaults")
    pod = kit.user_pod(c)
    (policy,) = kit.find(objects, "NetworkPolicy", f"{RELEASE}-neuropixels-hub-notebooks")
    assert kit.selector_matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    (dask_policy,) = kit.find(objects, "NetworkPolicy", f"{RELEASE}-neuropixels-hub-dask-clusters")
    assert not kit.selector_matches(dask_policy["spec"]["podSelector"], pod["metadata"]["labels"])


#: A hub without KubeSpawner (what `hub local` runs): z2jh's pass-through hub.config sets it.
LOCAL_SPAWNER = {"jupyterhub": {"hub": {"config": {"JupyterHub": {"spawner_class": "simple"}}}}}


def test_snippet_outside_kubernetes(hub_for):
    """A local hub (issue: `hub local`) gets the environment only, on c.Spawner."""
    c, _, settings = hub_for("secret-credentials", values=LOCAL_SPAWNER)
    assert c.JupyterHub.spawner_class == "simple"
    env = c.Spawner.environment
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == settings["gateway"]["proxyAddress"]
    assert {k for k in env if k.startswith("NEUROPIXELS_DASK__")} == DATA_KEYS
    assert not any(k.startswith("AWS_") for k in env)  # secrets exist only on Kubernetes
    # KubeSpawner settings stay as the chart left them.
    assert "service_account" not in c.KubeSpawner and "secretKeyRef" not in json.dumps(c)
    assert c.KubeSpawner.image == DEFAULT_IMAGE  # singleuser.image


def test_snippet_refuses_missing_service_and_unknown_settings(kit, render, monkeypatch):
    """Where no chart stands behind the snippet (a local hub), it checks its inputs itself; on
    Kubernetes the template refuses values without the service first
    (tests/chart/test_chart_schema.py)."""
    from traitlets.config import Config

    values = kit.values_for("defaults")
    settings = json.loads(kit.settings_json(render("defaults")))
    monkeypatch.setenv("NEUROPIXELS_HUB_SETTINGS", json.dumps(settings))
    c = Config()
    c.JupyterHub.spawner_class = "simple"
    c.JupyterHub.services = []
    with pytest.raises(ValueError, match="dask-gateway"):
        run_hub_snippets(c, values)
    c.JupyterHub.services = [{"name": "dask-gateway"}]
    monkeypatch.setenv("NEUROPIXELS_HUB_SETTINGS", json.dumps(dict(settings, version=2)))
    with pytest.raises(ValueError, match="unsupported settings version"):
        run_hub_snippets(c, values)
