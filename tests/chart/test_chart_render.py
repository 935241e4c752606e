"""What our templates render, and how values.yaml wires the two subcharts to them."""

from __future__ import annotations

import json

import pytest

RELEASE = "hub"
NAMESPACE = "neuro"
ALL_SETS = ["defaults", "secret-credentials", "iam-role", "custom-endpoint", "profiles",
            "spot-workers", "github-oauth", "https"]
STANDARD_LABELS = {
    "helm.sh/chart": "neuropixels-hub-0.1.0",
    "app.kubernetes.io/name": "neuropixels-hub",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/part-of": "neuropixels-hub",
}
CONTRACT = {
    "NEUROPIXELS_DASK__CACHE__URL",
    "NEUROPIXELS_DASK__S3__ANON",
    "NEUROPIXELS_DASK__S3__ENDPOINT_URL",
    "NEUROPIXELS_DASK__S3__REGION",
    "NEUROPIXELS_DASK__S3__REQUESTER_PAYS",
}


def settings(kit, objects) -> dict:
    return json.loads(kit.settings_json(objects))


def test_default_objects(render):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render("defaults"))
    assert kinds == [
        ("ConfigMap", "neuropixels-hub-jupyter"),
        ("ConfigMap", "neuropixels-hub-settings"),
        ("NetworkPolicy", f"{RELEASE}-neuropixels-hub-dask-clusters"),
        ("NetworkPolicy", f"{RELEASE}-neuropixels-hub-notebooks"),
        ("NetworkPolicy", f"{RELEASE}-neuropixels-hub-proxy-to-gateway"),
        ("ServiceAccount", f"{RELEASE}-neuropixels-hub-user"),
    ]


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_standard_labels_everywhere(render, value_set):
    for obj in render(value_set):
        labels = obj["metadata"]["labels"]
        assert labels.items() >= STANDARD_LABELS.items(), obj["metadata"]["name"]
        assert labels["app.kubernetes.io/component"], obj["metadata"]["name"]


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_data_settings_follow_the_package_contract(kit, render, value_set):
    values = kit.values_for(value_set)
    env = settings(kit, render(value_set))["env"]
    assert set(env) <= CONTRACT
    assert env["NEUROPIXELS_DASK__CACHE__URL"] == values["cache"]["url"]
    assert env["NEUROPIXELS_DASK__S3__ANON"] == str(values["s3"]["anon"]).lower()
    assert env["NEUROPIXELS_DASK__S3__REGION"] == values["s3"]["region"]
    assert env["NEUROPIXELS_DASK__S3__REQUESTER_PAYS"] == str(values["s3"]["requesterPays"]).lower()
    assert env.get("NEUROPIXELS_DASK__S3__ENDPOINT_URL", "") == values["s3"]["endpointUrl"]
    assert all(isinstance(v, str) for v in env.values())  # environment variables are strings


def test_defaults_read_the_public_allen_bucket_anonymously(kit, render):
    s = settings(kit, render("defaults"))
    assert s["env"] == {
        "NEUROPIXELS_DASK__CACHE__URL":
            "s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/",
        "NEUROPIXELS_DASK__S3__ANON": "true",
        "NEUROPIXELS_DASK__S3__REGION": "us-west-2",
        "NEUROPIXELS_DASK__S3__REQUESTER_PAYS": "false",
    }
    assert s["secretEnv"] == {}


def test_secret_credentials_are_references_only(kit, helm, render):
    objects = render("secret-credentials")
    assert settings(kit, objects)["secretEnv"] == {
        "AWS_ACCESS_KEY_ID": {"name": "neuropixels-s3", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "neuropixels-s3", "key": "AWS_SECRET_ACCESS_KEY"},
    }
    assert not kit.find(objects, "Secret")
    # A session token key adds AWS_SESSION_TOKEN.
    with_token = helm.template(["secret-credentials.yaml"],
                               ["credentials.keys.sessionToken=AWS_SESSION_TOKEN"])
    assert settings(kit, with_token)["secretEnv"]["AWS_SESSION_TOKEN"] == {
        "name": "neuropixels-s3", "key": "AWS_SESSION_TOKEN"}


def test_iam_role_annotations_and_existing_service_account(kit, helm, render):
    objects = render("iam-role")
    (sa,) = kit.find(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert sa["automountServiceAccountToken"] is False
    assert settings(kit, objects)["serviceAccountName"] == sa["metadata"]["name"]
    existing = helm.template(sets=["serviceAccount.create=false", "serviceAccount.name=lab-reader"])
    assert not kit.find(existing, "ServiceAccount")
    assert settings(kit, existing)["serviceAccountName"] == "lab-reader"
    none = helm.template(sets=["serviceAccount.create=false"])
    assert settings(kit, none)["serviceAccountName"] == ""


def test_gateway_addresses(kit, helm, render):
    gateway = settings(kit, render("defaults"))["gateway"]
    assert gateway == {
        "address": "http://proxy-public/services/dask-gateway",
        "proxyAddress": f"gateway://traefik-{RELEASE}-dask-gateway.{NAMESPACE}:80",
        "publicAddress": "/services/dask-gateway/",
        "serviceUrl": f"http://traefik-{RELEASE}-dask-gateway.{NAMESPACE}:80",
    }
    # dask-gateway names its objects after the release alone when the release name contains
    # "dask-gateway", and uses its own TCP port when it is not shared with web.
    other = helm.template(sets=["dask-gateway.traefik.service.ports.tcp.port=8786"],
                          release="my-dask-gateway")
    gateway = settings(kit, other)["gateway"]
    assert gateway["proxyAddress"] == f"gateway://traefik-my-dask-gateway.{NAMESPACE}:8786"
    assert gateway["serviceUrl"] == f"http://traefik-my-dask-gateway.{NAMESPACE}:80"
    (notebooks,) = kit.find(other, "NetworkPolicy", "my-dask-gateway-neuropixels-hub-notebooks")
    assert {p["port"] for p in notebooks["spec"]["egress"][0]["ports"]} == {8000, 8786}


def test_subchart_wiring_in_values(kit, render):
    """daskhub parity, and every name the subcharts' values refer to exists in our output."""
    values = kit.values_for("defaults")
    jh, gw = values["jupyterhub"], values["dask-gateway"]
    (cm,) = kit.find(render("defaults"), "ConfigMap", "neuropixels-hub-settings")

    ref = jh["hub"]["extraEnv"]["NEUROPIXELS_HUB_SETTINGS"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == cm["metadata"]["name"] and ref["key"] in cm["data"]
    (env,) = [e for e in gw["gateway"]["env"] if e["name"] == "NEUROPIXELS_HUB_SETTINGS"]
    assert env["valueFrom"]["configMapKeyRef"] == ref

    # The gateway reads the token the jupyterhub chart generates for the "dask-gateway" service
    # into its Secret "hub" under the key hub.services.<service>.apiToken.
    assert "dask-gateway" in jh["hub"]["services"]
    assert "apiToken" not in jh["hub"]["services"]["dask-gateway"]  # generated, not typed
    auth = gw["gateway"]["auth"]
    assert auth["type"] == "jupyterhub"
    assert auth["jupyterhub"] == {"apiTokenFromSecretName": "hub",
                                  "apiTokenFromSecretKey": "hub.services.dask-gateway.apiToken"}
    assert gw["gateway"]["prefix"] + "/" == settings(kit, render("defaults"))["gateway"][
        "publicAddress"]
    assert gw["traefik"]["service"]["type"] == "ClusterIP"
    assert jh["singleuser"]["defaultUrl"] == "/lab"
    assert jh["singleuser"]["extraEnv"]["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert jh["enabled"] is True and gw["enabled"] is True


def test_dependencies_pinned_with_conditions(kit):
    import yaml

    meta = yaml.safe_load((kit.CHART / "Chart.yaml").read_text())
    deps = {d["name"]: d for d in meta["dependencies"]}
    assert deps["jupyterhub"] == {"name": "jupyterhub", "version": "4.4.0",
                                  "repository": "https://hub.jupyter.org/helm-chart/",
                                  "condition": "jupyterhub.enabled"}
    assert deps["dask-gateway"] == {"name": "dask-gateway", "version": "2026.3.0",
                                    "repository": "https://helm.dask.org/",
                                    "condition": "dask-gateway.enabled"}


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_one_image_everywhere(kit, render, value_set):
    values = kit.values_for(value_set)
    image = f"{values['image']['name']}:{values['image']['tag']}"
    assert settings(kit, render(value_set))["image"]["ref"] == image
    single = values["jupyterhub"]["singleuser"]["image"]
    assert f"{single['name']}:{single['tag']}" == image  # what the pre-puller pulls
    # Dask clusters may run the chart's image and any a profile names (the example names none;
    # tests/chart/test_chart_user_pods.py has profiles that do).
    profile_images = [p["kubespawner_override"]["image"]
                      for p in values["jupyterhub"]["singleuser"].get("profileList", [])
                      if "image" in p.get("kubespawner_override", {})]
    assert settings(kit, render(value_set))["image"]["allowed"] == [image, *profile_images]


def test_custom_endpoint_egress_in_both_policies(kit, render):
    objects = render("custom-endpoint")
    minio = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}
    for name in ("dask-clusters", "notebooks"):
        (policy,) = kit.find(objects, "NetworkPolicy", f"{RELEASE}-neuropixels-hub-{name}")
        rules = policy["spec"]["egress"]
        assert {"to": [minio], "ports": [{"port": 9000, "protocol": "TCP"}]} in rules, name
        assert {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]} \
            in rules, name


def test_dask_policy_shape(kit, render):
    (policy,) = kit.find(render("defaults"), "NetworkPolicy",
                         f"{RELEASE}-neuropixels-hub-dask-clusters")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = [(r["from"][0]["podSelector"].get("matchLabels", {}).get(
        "app.kubernetes.io/component", "dask"), sorted(p["port"] for p in r.get("ports", [])))
        for r in spec["ingress"]]
    assert sources == [("dask", []), ("traefik", [8786, 8787]), ("gateway", [8788])]
    s3 = [r for r in spec["egress"] if any("ipBlock" in t for t in r.get("to", []))]
    # the public internet only: not the private ranges, not the link-local metadata endpoints
    assert s3 == [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]}}],
        "ports": [{"port": 443, "protocol": "TCP"}]}]


def test_notes_tell_the_operator_what_next(helm, kit):
    login = ("--values", str(kit.EXAMPLES / kit.LOGIN))
    out = helm.run("install", RELEASE, str(helm.chart), "--namespace", NAMESPACE,
                   "--dry-run=client", *login,
                   "--values", str(kit.EXAMPLES / "secret-credentials.yaml"))
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} port-forward service/proxy-public 8080:http" in notes
    assert "TRIAL MODE: only alice, bob, with the shared password." in notes
    assert "WARNING: the shared password is helm/examples/trial.yaml's placeholder" in notes
    assert "npd.get_client()" in notes
    assert "worker_cores 0.5-4 (default 1)" in notes
    assert "2 clusters per user" in notes
    assert f"kubectl -n {NAMESPACE} get secret neuropixels-s3" in notes
    own = helm.run("install", RELEASE, str(helm.chart), "--namespace", NAMESPACE,
                   "--dry-run=client", *login, "--set",
                   "jupyterhub.hub.config.SharedPasswordAuthenticator.user_password=0123456789ab")
    assert "WARNING" not in own.stdout.split("NOTES:", 1)[1]

    mismatch = helm.run("install", RELEASE, str(helm.chart), "--dry-run=client", *login,
                        "--set", "image.tag=0.2.0")
    assert "WARNING: jupyterhub.singleuser.image" in mismatch.stdout

    irsa_anon = helm.run("install", RELEASE, str(helm.chart), "--dry-run=client", *login,
                         "--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=x")
    assert "the IAM role is not used" in irsa_anon.stdout
