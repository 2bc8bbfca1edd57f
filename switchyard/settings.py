"""Switchyard settings: one module, driven by environment variables (see README, "Configuration").

Everything has an embedded default so that `make run` needs no configuration. In production
(`SWITCHYARD_ENV=production`) a missing or default SECRET_KEY refuses to start.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url

from switchyard.env import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_size,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
ENVIRONMENT = env_str("SWITCHYARD_ENV", "development").strip().lower()
if ENVIRONMENT not in {"development", "production"}:
    raise ConfigError(f"SWITCHYARD_ENV must be 'development' or 'production', got {ENVIRONMENT!r}")
PRODUCTION = ENVIRONMENT == "production"

DATA_DIR = env_path("SWITCHYARD_DATA_DIR", BASE_DIR / "var")
BLOB_DIR = env_path("SWITCHYARD_BLOB_DIR", DATA_DIR / "blobs")

# -- secrets -------------------------------------------------------------------------------
_DEFAULT_SECRET_MARKERS = {"", "change-me", "changeme", "secret", "django-insecure"}


def _secret_key() -> str:
    key = env_str("SECRET_KEY", "").strip()
    if PRODUCTION:
        if key.lower() in _DEFAULT_SECRET_MARKERS or key.startswith("django-insecure") or len(key) < 32:
            raise ConfigError("SECRET_KEY must be set to a random value of at least 32 characters in production")
        return key
    if key:
        return key
    # Development: a random key kept in the data dir, so sessions survive restarts.
    path = DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(50)
        path.write_text(value)
        path.chmod(0o600)
        return value


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# -- applications --------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_rq",
    "agents",
    "workspace",
    "search",
]

MIDDLEWARE = [
    "workspace.middleware.RequestIdMiddleware",
    "workspace.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "workspace.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "switchyard.urls"
ASGI_APPLICATION = "switchyard.asgi.application"
WSGI_APPLICATION = None
AUTH_USER_MODEL = "agents.User"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

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

# -- database ------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "").strip()
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql") and env_bool("DB_POOL", default=True):
        # Under ASGI every request runs in a fresh thread, so Django's persistent connections would
        # leak; a process-wide pool gives reuse without that (Django 5.1+, psycopg_pool).
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN", 2, minimum=0),
            "max_size": env_int("DB_POOL_MAX", 20, minimum=1),
            "timeout": env_int("DB_POOL_TIMEOUT", 30, minimum=1),
        }
else:
    DATABASES = {
        "default": {
            # Django's SQLite backend with a fair queue of writers (switchyard/db/sqlite3/base.py).
            "ENGINE": "switchyard.db.sqlite3",
            "NAME": str(env_path("SWITCHYARD_SQLITE_PATH", DATA_DIR / "db.sqlite3")),
            "OPTIONS": {
                # Immediate transactions serialise writers up front, so a read-then-write inside
                # one transaction can never fail half-way with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                    "PRAGMA busy_timeout=30000; PRAGMA foreign_keys=ON;"
                ),
            },
            "TEST": {"NAME": str(DATA_DIR / "test-db.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
# Idle SQLite connections each process keeps for the next request (switchyard/db/sqlite3/base.py).
SQLITE_POOL_SIZE = env_int("SWITCHYARD_SQLITE_POOL_SIZE", 16, minimum=0)

# -- redis, queues, channel layer ---------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "").strip() or f"unix://{DATA_DIR / 'redis.sock'}"
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600}
    for name in ("default", "index", "pipeline")
}
RQ = {"COMMIT_MODE": "on_db_commit"}
# Redis pub/sub: a group message is one PUBLISH. Delivery is best effort by design; the database
# is the truth and every live stream refills gaps from it.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("SWITCHYARD_CHANNEL_PREFIX", "switchyard")},
    }
}

# -- vectors and models --------------------------------------------------------------------
CHROMA_URL = env_str("CHROMA_URL", "").strip() or f"http://127.0.0.1:{env_int('CHROMA_PORT', 8001)}"
EMBEDDING_DEVICE = env_str("EMBEDDING_DEVICE", "cpu")
# torch threads per process: several processes share the cores (see search/embeddings.py).
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 1, minimum=1)
# Texts (queries and documents) through a TorchScript trace of the model, checked against
# encode() when built.
EMBEDDING_TRACED = env_bool("EMBEDDING_TRACED", default=True)
# Web processes load the model at start when any workspace is in intelligence mode.
SEARCH_WARM_UP = env_bool("SEARCH_WARM_UP", default=True)
LLM_BASE_URL = env_str("LLM_BASE_URL", "").strip()
LLM_MODEL = env_str("LLM_MODEL", "").strip()
LLM_API_KEY = env_str("LLM_API_KEY", "").strip()
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 60.0, minimum=1.0)

# -- product limits and defaults ----------------------------------------------------------
MAX_FILE_SIZE = env_size("SWITCHYARD_MAX_FILE_SIZE", 25 * 1024 * 1024)
INLINE_CONFLICT_CONTENT_LIMIT = 64 * 1024
BLOB_FSYNC = env_bool("SWITCHYARD_BLOB_FSYNC", default=True)
LOCK_DEFAULT_TTL = 60
LOCK_MAX_TTL = 300
TRANSFER_TTL_DAYS = env_int("SWITCHYARD_TRANSFER_TTL_DAYS", 14, minimum=1)
SWEEP_INTERVAL = env_float("SWITCHYARD_SWEEP_INTERVAL", 0.5, minimum=0.05)
AUTH_FAILURE_LIMIT = env_int("SWITCHYARD_AUTH_FAILURE_LIMIT", 20, minimum=1)
TOKEN_RATE_LIMIT = env_int("SWITCHYARD_TOKEN_RATE_LIMIT", 0, minimum=0)  # requests/second; 0 = off

# -- REST framework ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "agents.authentication.BearerTokenAuthentication",
        "agents.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["workspace.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "workspace.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "workspace.api.schema.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard API",
    "DESCRIPTION": "Versioned workspaces, locks, tasks, messages and search for parallel AI agents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status`; these name the two whose choice sets would collide.
    "ENUM_NAME_OVERRIDES": {
        "PipelineRunStatusEnum": "agents.models.PipelineRun.Status",
        "TransferStatusEnum": "workspace.models.tasks.TransferStatus",
    },
}

# -- security ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
# Production sits behind a TLS-terminating proxy: HSTS on every HTTPS response; the HTTP->HTTPS
# redirect is usually the proxy's job, SECURE_SSL_REDIRECT=true makes Django do it (health exempt).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = False  # the preload list is the operator's decision for their domain
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# Tests create many accounts; PBKDF2's deliberate slowness buys them nothing. Never in production.
if env_bool("SWITCHYARD_TEST_FAST_PASSWORDS", default=False) and not PRODUCTION:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Request bodies for files are read by the file view with its own limit (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# -- static files, i18n --------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "rq.worker": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "chromadb": {"level": "WARNING"},
    },
}
CSRF_FAILURE_VIEW = "workspace.api.errors.csrf_failure"
