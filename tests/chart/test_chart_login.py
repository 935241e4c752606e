"""Who can log in, and how users reach the hub (issue 22: a hub you can put on the internet).

The chart refuses to render with an authenticator that admits anyone (z2jh's default `dummy`,
`allow_all`, NativeAuthenticator's open sign-up), naming the ways to configure a real one; the
trial mode (a shared password plus an allow list) renders, and the real JupyterHub authenticator
built from the config that z2jh's jupyterhub_config.py produces admits exactly the listed users
with the password. The default Service is not a public LoadBalancer; the HTTPS and GitHub
examples render what they promise.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import pytest

#: What the refusal must name: every documented way to configure a login.
WAYS = ["github", "allowed_organizations", "generic-oauth", "cilogon", "native",
        "shared-password", "Authenticator.allowed_users", "helm/README.md"]


def test_default_values_are_refused_naming_how_to_configure_a_login(helm):
    """values.yaml alone keeps z2jh's `dummy`, which JupyterHub 5 lets anyone through."""
    stderr = helm.template_error(login=False)
    assert 'authenticator_class is "dummy"' in stderr
    assert "anyone log in with any user name and any password" in stderr
    for way in WAYS:
        assert way in stderr, way


@pytest.mark.parametrize("sets,message", [
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=jupyterhub.auth.DummyAuthenticator"],
     "authenticator_class is \"jupyterhub.auth.DummyAuthenticator\""),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=github",
      "jupyterhub.hub.config.GitHubOAuthenticator.allow_all=true"],
     "jupyterhub.hub.config.GitHubOAuthenticator.allow_all is true"),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=generic-oauth",
      "jupyterhub.hub.config.Authenticator.allow_all=true"],
     "jupyterhub.hub.config.Authenticator.allow_all is true"),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=native",
      "jupyterhub.hub.config.NativeAuthenticator.open_signup=true"],
     "NativeAuthenticator.open_signup is true"),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=shared-password",
      "jupyterhub.hub.config.SharedPasswordAuthenticator.user_password=long-enough-pw"],
     "Authenticator.allowed_users must list the user names of the trial"),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=shared-password",
      "jupyterhub.hub.config.Authenticator.allowed_users={alice}"],
     "SharedPasswordAuthenticator.user_password must be set, at least 8 characters"),
    (["jupyterhub.hub.config.JupyterHub.authenticator_class=shared-password",
      "jupyterhub.hub.config.SharedPasswordAuthenticator.user_password=short",
      "jupyterhub.hub.config.Authenticator.allowed_users={alice}"],
     "SharedPasswordAuthenticator.user_password must be set, at least 8 characters"),
])
def test_logins_that_admit_anyone_are_refused(helm, sets, message):
    assert message in helm.template_error(sets=sets)


@pytest.mark.parametrize("sets", [
    ["jupyterhub.hub.config.JupyterHub.authenticator_class=native"],
    ["jupyterhub.hub.config.JupyterHub.authenticator_class=cilogon",
     "jupyterhub.hub.config.Authenticator.allowed_users={ada}"],
    ["jupyterhub.hub.config.JupyterHub.authenticator_class="
     "oauthenticator.generic.GenericOAuthenticator",
     "jupyterhub.hub.config.GenericOAuthenticator.allowed_groups={lab}"],
])
def test_real_logins_render(helm, kit, sets):
    assert kit.find(helm.template(sets=sets), "ConfigMap")


def _authenticator(config):
    """The authenticator JupyterHub would build from the hub's config (its entry point)."""
    name = config.JupyterHub.authenticator_class
    (entry,) = [e for e in entry_points(group="jupyterhub.authenticators") if e.name == name]
    return entry.load()(config=config)


def test_trial_mode_admits_exactly_the_listed_users_with_the_password(kit):
    """z2jh's jupyterhub_config.py runs with the trial's values; the real authenticator that
    JupyterHub builds from the result lets in alice and bob with the password, nobody else."""
    release = kit.release()
    release.require_subcharts()
    config = release.hub_config()
    values = kit.values_for("defaults")["jupyterhub"]["hub"]["config"]
    password = values["SharedPasswordAuthenticator"]["user_password"]
    authenticator = _authenticator(config)
    assert type(authenticator).__name__ == "SharedPasswordAuthenticator"
    assert authenticator.allow_all is False

    def login(user: str, pw: str):
        data = {"username": user, "password": pw}
        return asyncio.run(authenticator.get_authenticated_user(None, data))

    for user in ("alice", "bob"):
        assert login(user, password)["name"] == user
        assert login(user, password + "x") is None
    assert login("mallory", password) is None
    assert login("Alice", password)["name"] == "alice"  # JupyterHub's names are lower case

    # The premise: what the chart refuses is z2jh's default, which JupyterHub 5 opens to all.
    dummy = entry_points(group="jupyterhub.authenticators")["dummy"].load()()
    assert asyncio.run(dummy.get_authenticated_user(
        None, {"username": "mallory", "password": "x"}))["name"] == "mallory"


def test_github_example_admits_only_the_organisation(kit):
    """The GitHub example: OAuth limited to an organisation, through the hub's real config."""
    release = kit.release("github-oauth")
    release.require_subcharts()
    config = release.hub_config()
    assert config.JupyterHub.authenticator_class == "github"
    github = config.GitHubOAuthenticator
    assert github.allowed_organizations == ["my-lab"]
    assert "read:org" in github.scope
    assert github.oauth_callback_url.startswith("https://")
    assert not any(section.get("allow_all") for section in config.values()
                   if hasattr(section, "get"))
    # The trial's password and list are not in it (the kit adds no login under an example
    # that has its own).
    assert "SharedPasswordAuthenticator" not in config
    assert "allowed_users" not in config.Authenticator


def test_https_example_serves_the_hub_over_tls_only(kit):
    release = kit.release("https")
    (ingress,) = release.find("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hub.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "proxy-public"
    assert ingress["spec"]["tls"] == [{"hosts": ["hub.example.org"],
                                       "secretName": "hub-example-org-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    (service,) = release.find("Service", "proxy-public")
    assert service["spec"]["type"] == "ClusterIP"


def test_no_value_set_puts_the_hub_on_a_public_ip(kit, values_name):
    """The default Service is ClusterIP: a LoadBalancer only where values ask for one."""
    release = kit.release(values_name)
    release.require_subcharts()
    for service in release.find("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", \
            service["metadata"]["name"]


def test_a_plain_http_load_balancer_is_warned_about(helm, kit):
    out = helm.run("install", "hub", str(helm.chart), "--dry-run=client",
                   "--values", str(kit.EXAMPLES / kit.LOGIN),
                   "--set", "jupyterhub.proxy.service.type=LoadBalancer")
    assert out.returncode == 0, out.stderr
    assert "WARNING: proxy-public is a LoadBalancer on plain HTTP" in out.stdout
    https = helm.run("install", "hub", str(helm.chart), "--dry-run=client",
                     "--values", str(kit.EXAMPLES / kit.LOGIN),
                     "--set", "jupyterhub.proxy.service.type=LoadBalancer",
                     "--set", "jupyterhub.proxy.https.enabled=true",
                     "--set", "jupyterhub.proxy.https.hosts={hub.example.org}",
                     "--set", "jupyterhub.proxy.https.letsencrypt.contactEmail=a@example.org")
    assert https.returncode == 0, https.stderr
    assert "WARNING: proxy-public" not in https.stdout
    assert "https://hub.example.org/" in https.stdout
