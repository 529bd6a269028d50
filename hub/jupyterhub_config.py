"""JupyterHub for a vmkit course on one server: ``make hub`` (root) runs it with this file.

One system user per student, each student's server a process of that user
(LocalProcessSpawner), so that the file permissions of the system keep students apart; the kit
installed into the users' environment (``make hub-env``); notebooks handed out with nbgitpuller
links (a git repository made with ``vmkit course copy``); idle servers stopped by the idle
culler; configurable-http-proxy from ``hub/node_modules`` (``make hub-proxy``, the version of
hub/package-lock.json).

Settings, from the environment (each has a default that suits a course server):

=========================  ====================================================================
VMKIT_HUB_IP               address the proxy listens on (default 127.0.0.1: put TLS in front)
VMKIT_HUB_PORT             its port (default 8000)
VMKIT_HUB_API_PORT         the proxy's REST API, on 127.0.0.1 (default VMKIT_HUB_PORT + 1)
VMKIT_HUB_HUB_PORT         the hub process itself, on 127.0.0.1 (default VMKIT_HUB_PORT + 2)
VMKIT_HUB_DATA             the hub's state: database, cookie secret (default /srv/vmkit-hub)
VMKIT_HUB_USERS_ENV        the users' environment: a venv or conda prefix with the kit and
                           nbgitpuller installed, readable by every student (default: the
                           hub's own environment)
VMKIT_HUB_STUDENTS         the students' login names, comma-separated (each a system user)
VMKIT_HUB_ADMINS           the instructors' login names, comma-separated
VMKIT_HUB_PASSWORD         set: the dummy authenticator with this one shared password (for
                           tests and a first try, never a course); unset: PAM, the students'
                           system passwords
VMKIT_HUB_COURSE_REPO      a course repository on this server (a path): students' git may
                           read it although another user owns it (git's safe.directory)
VMKIT_HUB_CULL_TIMEOUT     seconds of inactivity before the idle culler stops a server
                           (default 3600)
VMKIT_HUB_PROXY            the configurable-http-proxy program (default
                           hub/node_modules/.bin/configurable-http-proxy)
=========================  ====================================================================
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

HERE = Path(__file__).resolve().parent


def setting(name: str, default: str = "") -> str:
    return os.environ.get(f"VMKIT_HUB_{name}", default)


def names(name: str) -> set:
    return {n.strip() for n in setting(name).split(",") if n.strip()}


port = int(setting("PORT", "8000"))
data = Path(setting("DATA", "/srv/vmkit-hub"))
data.mkdir(parents=True, exist_ok=True)
# others may pass through (to data/public/) but not list it; the secrets are the hub's alone
data.chmod(0o711)
# (the hub writes its cookie secret 0600 itself; an empty file is a new database to SQLite)
(data / "jupyterhub.sqlite").touch(mode=0o600)
(data / "jupyterhub.sqlite").chmod(0o600)
users_env = Path(setting("USERS_ENV", sys.prefix))

# --- network: the proxy faces the students, the hub and the proxy's API stay on loopback ---
c.JupyterHub.ip = setting("IP", "127.0.0.1")
c.JupyterHub.port = port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(setting("HUB_PORT", str(port + 2)))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{setting('API_PORT', str(port + 1))}"
c.ConfigurableHTTPProxy.command = [
    setting("PROXY", str(HERE / "node_modules" / ".bin" / "configurable-http-proxy"))]
c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")

# --- state -------------------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data / "jupyterhub.pid")

# --- who may log in ----------------------------------------------------------------------------
if setting("PASSWORD"):
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = setting("PASSWORD")
else:
    c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = names("STUDENTS") | names("ADMINS")
c.Authenticator.admin_users = names("ADMINS")

# --- each student's server: a process of the student's system user -----------------------------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(users_env / "bin" / "python"), "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
# the student id that picks each exercise's variant (vmkit.homework.variant) is
# JUPYTERHUB_USER, which the spawner sets; nothing here may set VMKIT_STUDENT_ID for them
c.Spawner.environment = {
    "PYTHONHASHSEED": "0",
    # the users' environment first: `vmkit`, `python`, `pip` in a student's terminal
    "PATH": f"{users_env / 'bin'}:/usr/local/bin:/usr/bin:/bin",
}
# nothing else from the hub's own environment (JupyterHub would pass PATH and PYTHONPATH on:
# a hub started from an instructor's shell must not hand students the instructor's checkout)
c.Spawner.env_keep = ["LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP"]
course_repo = setting("COURSE_REPO")
if course_repo and "://" not in course_repo and ":" not in course_repo.split("/")[0]:
    # git (2.35.2 and later) refuses a repository that another user owns: this one is
    # trusted, in a system configuration of the students' own that includes the real one
    repo = Path(course_repo).resolve()
    public = data / "public"
    public.mkdir(exist_ok=True)
    public.chmod(0o755)
    gitconfig = public / "gitconfig"
    gitconfig.write_text(f"[include]\n\tpath = /etc/gitconfig\n[safe]\n\tdirectory = {repo}\n"
                         f"\tdirectory = {repo}/.git\n")
    gitconfig.chmod(0o644)
    c.Spawner.environment["GIT_CONFIG_SYSTEM"] = str(gitconfig)
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# --- the idle culler: stop servers (and their kernels' memory) nobody uses ----------------------
cull_timeout = int(setting("CULL_TIMEOUT", "3600"))
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={cull_timeout}",
                f"--cull-every={max(10, min(300, cull_timeout // 2))}"],
}]
