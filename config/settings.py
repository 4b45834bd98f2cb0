"""Cairn settings: one module, every knob from the environment.

Two shapes come out of the same settings:

* personal — no ``DATABASE_URL``: SQLite (WAL) in ``CAIRN_DATA_DIR``, an
  in-process background worker instead of Celery, the single local user is
  signed in automatically on loopback.
* team — ``DATABASE_URL`` (PostgreSQL) and ``CAIRN_REDIS_URL``: Celery workers
  on the queues ``ingest``, ``index`` and ``inference``; users sign in.

See the configuration table in README.md.  A malformed value stops start-up
with a message naming the variable (``config.env.ConfigError``).
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from config.env import (
    ConfigError,
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
    oidc_attribute_claims,
    oidc_issuer_check,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# --- shape -------------------------------------------------------------------

DATA_DIR = Path(env_str("CAIRN_DATA_DIR", str(BASE_DIR / "data")) or "").expanduser().resolve()
_database_url = env_str("DATABASE_URL")
CAIRN_MODE = env_choice("CAIRN_MODE", "team" if _database_url else "personal", ("personal", "team"))
CAIRN_REDIS_URL = env_str("CAIRN_REDIS_URL", aliases=("REDIS_URL",))
CAIRN_TASKS = env_choice(
    "CAIRN_TASKS", "celery" if CAIRN_REDIS_URL else "local", ("celery", "local", "inline")
)
if CAIRN_TASKS == "celery" and not CAIRN_REDIS_URL:
    raise ConfigError("CAIRN_TASKS=celery needs CAIRN_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
if CAIRN_MODE == "team" and CAIRN_TASKS == "local" and not env_bool("CAIRN_ALLOW_LOCAL_TASKS", False):
    raise ConfigError(
        "Team mode needs Celery workers: set CAIRN_REDIS_URL=redis://host:6379/0 "
        "(or CAIRN_ALLOW_LOCAL_TASKS=1 to run the in-process worker anyway)"
    )

try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:  # pragma: no cover - depends on the host
    raise ConfigError(f"CAIRN_DATA_DIR={DATA_DIR} cannot be created: {exc.strerror}") from exc

CAIRN_STORAGE_DIR = Path(env_str("CAIRN_STORAGE_DIR", str(DATA_DIR / "blobs")) or "").resolve()
CAIRN_INDEX_DIR = Path(env_str("CAIRN_INDEX_DIR", str(DATA_DIR / "index")) or "").resolve()
# The index writer keeps its copy of the index between passes instead of reading it again each
# pass (~1-2 s at 1M chunks): on by default in team mode, where it runs in its own worker process.
CAIRN_INDEX_WRITER_KEEP = env_bool("CAIRN_INDEX_WRITER_KEEP", CAIRN_MODE == "team")

# --- secrets -----------------------------------------------------------------


def _secret_key() -> str:
    key = env_str("CAIRN_SECRET_KEY", aliases=("DJANGO_SECRET_KEY",))
    if key:
        if CAIRN_MODE == "team" and (len(key) < 50 or len(set(key)) < 5):
            raise ConfigError("CAIRN_SECRET_KEY must be at least 50 characters of random text in team mode, "
                              "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(50))'")
        return key
    if CAIRN_MODE == "team":
        raise ConfigError("CAIRN_SECRET_KEY (or CAIRN_SECRET_KEY_FILE) must be set in team mode")
    # Personal mode: one random key per data directory, created on first start.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("CAIRN_DEBUG", False)

_loopback = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env_list("CAIRN_ALLOWED_HOSTS", _loopback if CAIRN_MODE == "personal" else [])
if CAIRN_MODE == "team" and not ALLOWED_HOSTS:
    raise ConfigError("CAIRN_ALLOWED_HOSTS must list the host names Cairn is served under in team mode")
CSRF_TRUSTED_ORIGINS = env_list("CAIRN_CSRF_TRUSTED_ORIGINS", [])
# Django's admin bypasses Cairn's services: off unless asked for, and audited when on (access/admin.py).
CAIRN_DJANGO_ADMIN = env_bool("CAIRN_DJANGO_ADMIN", False)

# --- Django ------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # No autodiscovery: Cairn's audited admin site (access/admin.py) registers what it shows.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: no CDN
    "guardian",
    "axes",
    "access",
    "kb",
    "ingestion",
    "inference",
]

MIDDLEWARE = [
    "access.middleware.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "access.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "access.middleware.RequestIdMiddleware",
    "kb.metrics.RequestMetricsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions (it reads the language chosen with the switcher), before CommonMiddleware; without a
    # choice it follows the browser's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "access.middleware.PersonalModeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "kb.context_processors.cairn",
            ],
        },
    },
]

if _database_url:
    DATABASES = {"default": database_from_url("DATABASE_URL", _database_url)}
    # Connections each web process (ASGI) shares in a pool; see config/asgi.py.
    CAIRN_DB_POOL_SIZE = env_int("CAIRN_DB_POOL_SIZE", 10, minimum=1, maximum=1000)
    # Seconds a request waits for a pooled connection before its 503 (the database away, or all busy).
    CAIRN_DB_POOL_TIMEOUT = env_int("CAIRN_DB_POOL_TIMEOUT", 3, minimum=1, maximum=60)
else:
    DATABASES = {"default": sqlite_database(DATA_DIR / "cairn.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "access.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before the password is checked
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# The UI's languages: English and Simplified Chinese (catalogues in locale/, see docs/i18n.md).  The
# browser's Accept-Language picks one unless the user chose another with the switcher (a cookie).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_NAME = "cairn_language"
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = env_str("CAIRN_TIME_ZONE", "UTC") or "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("CAIRN_SECURE_COOKIES", CAIRN_MODE == "team")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Proxies whose forwarding headers are believed (addresses or networks); every other peer's are
# removed before anything reads them (access.middleware.ClientAddressMiddleware).
CAIRN_TRUSTED_PROXIES = env_networks("CAIRN_TRUSTED_PROXIES")
CAIRN_BEHIND_TLS_PROXY = env_bool("CAIRN_BEHIND_TLS_PROXY", False)
if CAIRN_BEHIND_TLS_PROXY:
    if not CAIRN_TRUSTED_PROXIES:
        raise ConfigError("CAIRN_BEHIND_TLS_PROXY=1 needs CAIRN_TRUSTED_PROXIES: the address of the TLS proxy, "
                          "whose X-Forwarded-Proto alone is believed (e.g. CAIRN_TRUSTED_PROXIES=127.0.0.1)")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Behind a TLS proxy the team shape sends HSTS and redirects plain HTTP (each can be turned off).
_tls_team = CAIRN_MODE == "team" and CAIRN_BEHIND_TLS_PROXY
SECURE_HSTS_SECONDS = env_int("CAIRN_HSTS_SECONDS", 31_536_000 if _tls_team else 0, minimum=0)
# The header covers this host's own subdomains only (kb.example.org and *.kb.example.org).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CAIRN_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("CAIRN_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("CAIRN_SSL_REDIRECT", _tls_team)
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$", r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and scrapers from inside the network
# Submitting a host to the browsers' HSTS preload list is the operator's decision (CAIRN_HSTS_PRELOAD=1):
# `check --deploy` would otherwise warn on every deployment that has not made it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- sign-in throttling (django-axes; access/throttling.py) --------------------------------

# Per account and, separately, per client address; Redis-backed in the team shape (shared by
# every web process), database-backed in the personal one.
AXES_FAILURE_LIMIT = env_int("CAIRN_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CAIRN_LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "access.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "access.throttling.locked_out"
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler" if CAIRN_REDIS_URL else "axes.handlers.database.AxesDatabaseHandler"
AXES_VERBOSE = False
if CAIRN_REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CAIRN_REDIS_URL,
                          "KEY_PREFIX": "cairn"}}

# --- uploads -------------------------------------------------------------------

CAIRN_MAX_UPLOAD_BYTES = env_int("CAIRN_MAX_UPLOAD_MB", 100, minimum=1, maximum=10_000) * 1024 * 1024
# Bodies of non-file requests stay small; files stream to a temporary file
# above 2.5 MB rather than being held in memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# POST /v1/chat/completions: the whole conversation comes with each request, so it is bounded
# in bytes, in messages and in characters per message (kb/api/openai.py).
CAIRN_CHAT_MAX_BYTES = env_int("CAIRN_CHAT_MAX_KB", 512, minimum=16, maximum=5 * 1024) * 1024
CAIRN_CHAT_MAX_MESSAGES = env_int("CAIRN_CHAT_MAX_MESSAGES", 100, minimum=1, maximum=10_000)
CAIRN_CHAT_MAX_MESSAGE_CHARS = env_int("CAIRN_CHAT_MAX_MESSAGE_CHARS", 32_000, minimum=100, maximum=1_000_000)
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)

# --- ingestion, retrieval, answering --------------------------------------------

CAIRN_EMBEDDING_MODEL = env_str("CAIRN_EMBEDDING_MODEL")  # a local directory; default: bundled MiniLM
# Passages per forward pass; 0: the embedder's choice for its device (64 on a CPU, by memory on a GPU).
CAIRN_EMBED_BATCH = env_int("CAIRN_EMBED_BATCH", 0, minimum=0, maximum=4096)
# Small documents waiting together are embedded in one call (ingestion/pipeline.py, run_ingest_batch): at most
# this many documents a batch (1: each alone), each of at most CAIRN_INGEST_BATCH_MAX_KB of upload.
CAIRN_INGEST_BATCH = env_int("CAIRN_INGEST_BATCH", 32, minimum=1, maximum=1024)
CAIRN_INGEST_BATCH_MAX_BYTES = env_int("CAIRN_INGEST_BATCH_MAX_KB", 32, minimum=0, maximum=1024 * 1024) * 1024
CAIRN_EMBED_DEVICE = env_str("CAIRN_EMBED_DEVICE")  # e.g. "cpu", "cuda"; default: a GPU when torch sees one
# Native threads (torch, OpenMP, OpenBLAS) per request of a team web process (it embeds only queries;
# kb.serving.limit_query_threads).
CAIRN_QUERY_THREADS = env_int("CAIRN_QUERY_THREADS", 1, minimum=1, maximum=256)
# Search queries' vectors kept per process, most recently used first (kb.index.embed_query); 0: none.
CAIRN_QUERY_CACHE = env_int("CAIRN_QUERY_CACHE", 4096, minimum=0, maximum=1_000_000)
# auto: bf16 on CPUs with avx512_bf16/AMX and on GPUs that have it natively, fp16 on older GPUs, else fp32.
CAIRN_EMBED_DTYPE = env_choice("CAIRN_EMBED_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16"))
# Dense index (kb.retrieval.dense.DenseConfig); defaults chosen by benchmarks/dense.py.
CAIRN_DENSE_APPROX_ABOVE = env_int("CAIRN_DENSE_APPROX_ABOVE", 100_000, minimum=1, maximum=10**12)
CAIRN_DENSE_SPEC = env_str("CAIRN_DENSE_SPEC") or "PQ192x4fs,Refine(SQfp16)"
CAIRN_DENSE_RERANK_DEPTH = env_int("CAIRN_DENSE_RERANK_DEPTH", 500, minimum=10, maximum=1_000_000)
CAIRN_DENSE_EF_SEARCH = env_int("CAIRN_DENSE_EF_SEARCH", 128, minimum=1, maximum=65_536)
CAIRN_DENSE_EXACT_MAX = env_int("CAIRN_DENSE_EXACT_MAX", 20_000, minimum=0, maximum=10**12)
CAIRN_DENSE_DELTA_MAX = env_int("CAIRN_DENSE_DELTA_MAX", 50_000, minimum=1, maximum=10**12)
# Where the dense leg searches (kb/retrieval/dense_gpu.py): cpu (FAISS on the CPU), cuda (exact on the GPU:
# FAISS's GPU build if installed, else torch), auto (cuda when FAISS is a GPU build that sees a GPU).
# cuda with no GPU visible fails the start-up check (kb/checks.py).
CAIRN_DENSE_DEVICE = env_choice("CAIRN_DENSE_DEVICE", "cpu", ("auto", "cpu", "cuda"))
# One document may make at most this many passages (a 50 MB one-line file made 116,898); more ends FAILED.
CAIRN_MAX_PASSAGES_PER_DOCUMENT = env_int("CAIRN_MAX_PASSAGES_PER_DOCUMENT", 20_000, minimum=1, maximum=10_000_000)
CAIRN_CHUNK_TOKENS = env_int("CAIRN_CHUNK_TOKENS", 200, minimum=16, maximum=8192)
CAIRN_CHUNK_OVERLAP = env_int("CAIRN_CHUNK_OVERLAP", 40, minimum=0, maximum=4096)
if CAIRN_CHUNK_OVERLAP >= CAIRN_CHUNK_TOKENS:
    raise ConfigError("CAIRN_CHUNK_OVERLAP must be smaller than CAIRN_CHUNK_TOKENS")
# Fusion of the dense and BM25 legs (kb/retrieval/fusion.py; the default is explained in docs/retrieval.md).
CAIRN_FUSION = env_choice("CAIRN_FUSION", "convex", ("rrf", "convex"))
CAIRN_FUSION_WEIGHT = env_float("CAIRN_FUSION_WEIGHT", 0.5, minimum=0.0)  # the dense leg's share
if CAIRN_FUSION_WEIGHT > 1.0:
    raise ConfigError(f"CAIRN_FUSION_WEIGHT must be between 0 and 1, got {CAIRN_FUSION_WEIGHT}")
CAIRN_FUSION_NORM = env_choice("CAIRN_FUSION_NORM", "minmax", ("minmax", "zscore"))
CAIRN_RRF_K = env_int("CAIRN_RRF_K", 60, minimum=1, maximum=10_000)
CAIRN_SEARCH_CANDIDATES = env_int("CAIRN_SEARCH_CANDIDATES", 100, minimum=10, maximum=10_000)
# Per-leg depth; 0 means CAIRN_SEARCH_CANDIDATES.
CAIRN_DENSE_CANDIDATES = env_int("CAIRN_DENSE_CANDIDATES", 0, minimum=0, maximum=10_000)
CAIRN_LEXICAL_CANDIDATES = env_int("CAIRN_LEXICAL_CANDIDATES", 0, minimum=0, maximum=10_000)
# "No good match" (kb/retrieval/evidence.py): fires unless the dense leg vouches (best cosine >= DENSE and
# best cosine minus the dense candidates' median >= MARGIN) or the lexical leg does (the best BM25 hit covers
# >= LEXICAL of the query's IDF mass and that hit's cosine minus the same median >= AGREEMENT).
# Calibrated by benchmarks/no_match.py (docs/retrieval.md); -1 switches a margin condition off.
CAIRN_NO_MATCH_DENSE = env_float("CAIRN_NO_MATCH_DENSE", 0.35, minimum=-1.0)
CAIRN_NO_MATCH_MARGIN = env_float("CAIRN_NO_MATCH_MARGIN", -1.0, minimum=-1.0)
CAIRN_NO_MATCH_LEXICAL = env_float("CAIRN_NO_MATCH_LEXICAL", 0.5, minimum=0.0)
CAIRN_NO_MATCH_AGREEMENT = env_float("CAIRN_NO_MATCH_AGREEMENT", 0.1, minimum=-1.0)
# ... unless the coverage reaches this (the embedder may not read the language; 1.01: never alone).
CAIRN_NO_MATCH_COVERAGE_ALONE = env_float("CAIRN_NO_MATCH_COVERAGE_ALONE", 0.999, minimum=0.0)
# The best cosine the dense leg needs when no passage holds any query term (keyboard mash, another language).
CAIRN_NO_MATCH_DENSE_UNSEEN = env_float("CAIRN_NO_MATCH_DENSE_UNSEEN", 0.6, minimum=-1.0)
# The co-occurrence test's significance level: a query whose terms the collection never puts together more
# often than chance is a bag of words (0 turns the test off; kb/retrieval/evidence.py).
CAIRN_NO_MATCH_COHERENCE = min(env_float("CAIRN_NO_MATCH_COHERENCE", 0.05, minimum=0.0), 1.0)
# Such a query's best cosine must beat 95 % of the collection's own random-word queries (kb/index.py).
CAIRN_NO_MATCH_NULL = env_bool("CAIRN_NO_MATCH_NULL", True)
# The default fusion scales down a leg that cannot find the passages its own text spans came from
# (the bundled English embedder on Chinese documents; kb/retrieval/legcheck.py). 0: the default as set.
CAIRN_LEG_CHECK = env_bool("CAIRN_LEG_CHECK", True)
CAIRN_SEARCH_MAX_K = env_int("CAIRN_SEARCH_MAX_K", 100, minimum=1, maximum=1000)
# Readable chunk ranges kept between searches while the documents table is unchanged (SQLite; kb/range_cache.py).
CAIRN_RANGE_CACHE_MB = env_int("CAIRN_RANGE_CACHE_MB", 64, minimum=0, maximum=65_536)
# Optional cross-encoder over the fused top-N (a local sentence-transformers CrossEncoder dir; empty = off).
CAIRN_RERANKER = env_str("CAIRN_RERANKER") or None
CAIRN_RERANK_TOP_N = env_int("CAIRN_RERANK_TOP_N", 50, minimum=1, maximum=1000)
CAIRN_RERANK_BATCH = env_int("CAIRN_RERANK_BATCH", 32, minimum=1, maximum=1024)
# bfloat16 is ~3x faster on CPUs with avx512_bf16/AMX; opt-in, as quality depends on the checkpoint.
CAIRN_RERANK_DTYPE = env_choice("CAIRN_RERANK_DTYPE", "float32", ("float32", "bfloat16"))
if CAIRN_RERANKER and not (Path(CAIRN_RERANKER).expanduser() / "config.json").is_file():
    raise ConfigError(f"CAIRN_RERANKER={CAIRN_RERANKER} is not a model directory (no config.json)")
# Golden sets (per-collection retrieval checks) are evaluated synchronously, so they are capped.
CAIRN_GOLDEN_MAX_QUESTIONS = env_int("CAIRN_GOLDEN_MAX_QUESTIONS", 200, minimum=1, maximum=5000)

# Generation backend; CAIRN_GENERATOR is its old name, still read as an alias.
CAIRN_LLM_BACKEND = env_choice("CAIRN_LLM_BACKEND", "extractive", ("extractive", "transformers", "vllm", "openai"),
                               aliases=("CAIRN_GENERATOR",))
CAIRN_LLM_PATH = env_str("CAIRN_LLM_PATH")  # model directory or .gguf file (openai: optional tokenizer dir)
if CAIRN_LLM_BACKEND in ("transformers", "vllm") and not CAIRN_LLM_PATH:
    raise ConfigError(f"CAIRN_LLM_BACKEND={CAIRN_LLM_BACKEND} needs CAIRN_LLM_PATH (a local model directory)")
CAIRN_LLM_DTYPE = env_choice("CAIRN_LLM_DTYPE", "auto", ("auto", "bfloat16", "float16", "float32"))
CAIRN_LLM_QUANTIZATION = env_choice("CAIRN_LLM_QUANTIZATION", "none", ("none", "8bit", "4bit"))
CAIRN_LLM_DEVICE = env_str("CAIRN_LLM_DEVICE")  # "cuda:1", "cpu"; default: cuda:0 when available
CAIRN_LLM_DEVICE_MAP = env_str("CAIRN_LLM_DEVICE_MAP")  # "auto": spread over all GPUs (accelerate)
CAIRN_LLM_GGUF_FILE = env_str("CAIRN_LLM_GGUF_FILE")  # a .gguf file inside CAIRN_LLM_PATH
CAIRN_LLM_CONTEXT_WINDOW = env_int("CAIRN_LLM_CONTEXT_WINDOW", 0, minimum=0, maximum=10_000_000)
# Passages a local model is shown at most; 0: automatic (3 for models under 1.5B parameters or a short window).
CAIRN_LLM_MAX_PASSAGES = env_int("CAIRN_LLM_MAX_PASSAGES", 0, minimum=0, maximum=50)
# How a local model is asked: "cited" (instructions, numbered passages, [n] markers), "plain" (context and
# question, citations attributed afterwards); "auto": plain for models under 1.5B parameters.
CAIRN_LLM_PROMPT = env_choice("CAIRN_LLM_PROMPT", "auto", ("auto", "cited", "plain"))
# Model files vs cairn-manifest.json: verify when present, require one, or off.
CAIRN_LLM_MANIFEST = env_choice("CAIRN_LLM_MANIFEST", "verify", ("verify", "require", "off"))
CAIRN_VLLM_TENSOR_PARALLEL = env_int("CAIRN_VLLM_TENSOR_PARALLEL", 1, minimum=1, maximum=64)
CAIRN_VLLM_GPU_MEMORY = env_float("CAIRN_VLLM_GPU_MEMORY", 0.9, minimum=0.05)
CAIRN_OPENAI_BASE_URL = env_str("CAIRN_OPENAI_BASE_URL")  # e.g. http://vllm:8000/v1
CAIRN_OPENAI_MODEL = env_str("CAIRN_OPENAI_MODEL")
CAIRN_OPENAI_API_KEY = env_str("CAIRN_OPENAI_API_KEY")  # or CAIRN_OPENAI_API_KEY_FILE
CAIRN_OPENAI_TIMEOUT = env_float("CAIRN_OPENAI_TIMEOUT", 120.0, minimum=1.0)
if CAIRN_LLM_BACKEND == "openai" and not (CAIRN_OPENAI_BASE_URL and CAIRN_OPENAI_MODEL):
    raise ConfigError("CAIRN_LLM_BACKEND=openai needs CAIRN_OPENAI_BASE_URL and CAIRN_OPENAI_MODEL")


def _llm_options() -> dict[str, object]:
    """Keyword options for ``inference.api.load_generator`` from the settings above (hashable values)."""
    window = CAIRN_LLM_CONTEXT_WINDOW or None
    quantization = None if CAIRN_LLM_QUANTIZATION == "none" else CAIRN_LLM_QUANTIZATION
    if CAIRN_LLM_BACKEND == "transformers":
        return {
            "dtype": CAIRN_LLM_DTYPE, "quantization": quantization, "device": CAIRN_LLM_DEVICE,
            "device_map": CAIRN_LLM_DEVICE_MAP, "gguf_file": CAIRN_LLM_GGUF_FILE,
            "context_window": window, "manifest": CAIRN_LLM_MANIFEST,
            "max_passages": CAIRN_LLM_MAX_PASSAGES or None,
            "prompt": None if CAIRN_LLM_PROMPT == "auto" else CAIRN_LLM_PROMPT,
        }
    if CAIRN_LLM_BACKEND == "vllm":
        return {
            "dtype": CAIRN_LLM_DTYPE, "quantization": quantization, "context_window": window,
            "manifest": CAIRN_LLM_MANIFEST, "tensor_parallel_size": CAIRN_VLLM_TENSOR_PARALLEL,
            "gpu_memory_utilization": CAIRN_VLLM_GPU_MEMORY,
        }
    if CAIRN_LLM_BACKEND == "openai":
        return {
            "base_url": CAIRN_OPENAI_BASE_URL, "model": CAIRN_OPENAI_MODEL,
            "api_key": CAIRN_OPENAI_API_KEY, "request_timeout": CAIRN_OPENAI_TIMEOUT, "context_window": window,
        }
    return {}


CAIRN_LLM_OPTIONS = _llm_options()
CAIRN_MAX_NEW_TOKENS = env_int("CAIRN_MAX_NEW_TOKENS", 512, minimum=1, maximum=32_768)
CAIRN_ASK_PASSAGES = env_int("CAIRN_ASK_PASSAGES", 6, minimum=1, maximum=50)
CAIRN_ASK_TIMEOUT = env_float("CAIRN_ASK_TIMEOUT", 300.0, minimum=1.0)
# Generation pool (inference/pool.py): batching, admission control, timeouts.
CAIRN_GEN_MAX_BATCH = env_int("CAIRN_GEN_MAX_BATCH", 8, minimum=1, maximum=256)
CAIRN_GEN_BATCH_WAIT_MS = env_int("CAIRN_GEN_BATCH_WAIT_MS", 10, minimum=0, maximum=10_000)
CAIRN_GEN_QUEUE_SIZE = env_int("CAIRN_GEN_QUEUE_SIZE", 64, minimum=1, maximum=100_000)
CAIRN_GEN_USER_CONCURRENCY = env_int("CAIRN_GEN_USER_CONCURRENCY", 4, minimum=1, maximum=10_000)
CAIRN_GEN_TIMEOUT = env_float("CAIRN_GEN_TIMEOUT", 240.0, minimum=1.0)
CAIRN_METRICS_TOKEN = env_str("CAIRN_METRICS_TOKEN")  # Bearer token for GET /metrics from non-loopback
# Web worker processes share their request metrics through files here (prometheus_client's
# multiprocess mode; kb/metrics.py). Set before anything imports prometheus_client.
CAIRN_METRICS_DIR = Path(env_str("CAIRN_METRICS_DIR", str(DATA_DIR / "metrics")) or "").resolve()
CAIRN_METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(CAIRN_METRICS_DIR)

CAIRN_JOB_MAX_ATTEMPTS = env_int("CAIRN_JOB_MAX_ATTEMPTS", 3, minimum=1, maximum=100)
# A job silent this long counts as lost (the reaper queues it again); keep it well above one embedding slice.
CAIRN_JOB_STUCK_SECONDS = env_int("CAIRN_JOB_STUCK_SECONDS", 900, minimum=3)
CAIRN_REAPER_INTERVAL = env_int("CAIRN_REAPER_INTERVAL", 60, minimum=1)
CAIRN_COMPACT_INTERVAL = env_int("CAIRN_COMPACT_INTERVAL", 3600, minimum=1)
# Audit events older than this many years are removed by a periodic task (0 = keep forever).
CAIRN_AUDIT_RETENTION_YEARS = env_int("CAIRN_AUDIT_RETENTION_YEARS", 7, minimum=0, maximum=1000)
CAIRN_AUDIT_RETENTION_INTERVAL = env_int("CAIRN_AUDIT_RETENTION_INTERVAL", 86_400, minimum=60)
# A keyed audit chain (HMAC-SHA256): the key comes from a file outside the database (CAIRN_AUDIT_KEY_FILE).
CAIRN_AUDIT_KEY = env_str("CAIRN_AUDIT_KEY")
if CAIRN_AUDIT_KEY is not None and len(CAIRN_AUDIT_KEY) < 32:
    raise ConfigError("CAIRN_AUDIT_KEY (CAIRN_AUDIT_KEY_FILE) must hold at least 32 characters of random text")
# The chain's head is appended to this file (outside the database) every CAIRN_AUDIT_ANCHOR_INTERVAL seconds.
CAIRN_AUDIT_ANCHOR_FILE = env_str("CAIRN_AUDIT_ANCHOR_FILE")
CAIRN_AUDIT_ANCHOR_INTERVAL = env_int("CAIRN_AUDIT_ANCHOR_INTERVAL", 3600, minimum=10)
# One document's parse: seconds and memory (an address-space limit on the parsing process; ingestion/parsing.py).
CAIRN_PARSE_TIMEOUT = env_float("CAIRN_PARSE_TIMEOUT", 120.0, minimum=1.0)
CAIRN_PARSE_MAX_MB = env_int("CAIRN_PARSE_MAX_MB", 1024, minimum=128, maximum=1 << 20)
# The citation viewer's page images (ingestion/pdf_pages.py): each page is rendered in a child process
# within these seconds and megabytes of address space; rendered pages are cached under CAIRN_DATA_DIR,
# the oldest dropped past CAIRN_PAGE_CACHE_MB.
CAIRN_PAGE_RENDER_TIMEOUT = env_float("CAIRN_PAGE_RENDER_TIMEOUT", 20.0, minimum=1.0)
CAIRN_PAGE_RENDER_MAX_MB = env_int("CAIRN_PAGE_RENDER_MAX_MB", 768, minimum=128, maximum=1 << 20)
CAIRN_PAGE_CACHE_DIR = DATA_DIR / "page-cache"
CAIRN_PAGE_CACHE_MB = env_int("CAIRN_PAGE_CACHE_MB", 256, minimum=1, maximum=1 << 20)
CAIRN_INGEST_SOFT_LIMIT = env_int("CAIRN_INGEST_SOFT_LIMIT", 1800, minimum=10)
CAIRN_INGEST_HARD_LIMIT = env_int("CAIRN_INGEST_HARD_LIMIT", 1900, minimum=20)
if CAIRN_INGEST_HARD_LIMIT <= CAIRN_INGEST_SOFT_LIMIT:
    raise ConfigError("CAIRN_INGEST_HARD_LIMIT must be larger than CAIRN_INGEST_SOFT_LIMIT")

# --- Celery (team shape) ---------------------------------------------------------

CELERY_BROKER_URL = CAIRN_REDIS_URL or "memory://"
# No result backend: tasks report through the database (jobs) and Redis streams (generations), and a
# backend would subscribe to every task's result on sending — failing sends while Redis is away.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "ingest"
CELERY_TASK_ROUTES = {
    "cairn.ingest.*": {"queue": "ingest"},
    "cairn.index.*": {"queue": "index"},
    "cairn.inference.*": {"queue": "inference"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = False  # opted into per task, only where the task is idempotent
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Sending a task while Redis is away fails within about two seconds instead of blocking a request;
# the job is in the database, and the reaper sends it again (ingestion.tasks.dispatch).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Redis redelivers an unacknowledged task after this long: it must exceed the
# longest hard time limit, or a slow but healthy task would run twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CAIRN_INGEST_HARD_LIMIT + 600}
CELERY_RESULT_EXPIRES = 3600
# The beat schedule is built from ingestion.tasks' table (config/celery.py), where the personal worker reads it too.

# --- single sign-on (OpenID Connect) and SCIM provisioning ---------------------------
# Set CAIRN_OIDC_ISSUER to connect an identity provider (docs/sso.md): "Sign in with …" on the
# login page, and the provider's JWT access tokens accepted as bearer tokens on the API.
CAIRN_OIDC_ISSUER = (env_str("CAIRN_OIDC_ISSUER") or "").rstrip("/") or None
CAIRN_OIDC_CLIENT_ID = env_str("CAIRN_OIDC_CLIENT_ID")
CAIRN_OIDC_CLIENT_SECRET = env_str("CAIRN_OIDC_CLIENT_SECRET")  # or CAIRN_OIDC_CLIENT_SECRET_FILE
CAIRN_OIDC_AUDIENCE = env_str("CAIRN_OIDC_AUDIENCE") or CAIRN_OIDC_CLIENT_ID
CAIRN_OIDC_USERNAME_CLAIM = env_str("CAIRN_OIDC_USERNAME_CLAIM", "preferred_username") or "preferred_username"
CAIRN_OIDC_GROUPS_CLAIM = env_str("CAIRN_OIDC_GROUPS_CLAIM", "groups") or "groups"
CAIRN_OIDC_ATTRIBUTE_CLAIMS = oidc_attribute_claims("CAIRN_OIDC_ATTRIBUTE_CLAIMS")
CAIRN_OIDC_PROVIDER_NAME = env_str("CAIRN_OIDC_PROVIDER_NAME", "your organisation's account") or "SSO"
if CAIRN_OIDC_ISSUER:
    oidc_issuer_check("CAIRN_OIDC_ISSUER", CAIRN_OIDC_ISSUER)
    if not CAIRN_OIDC_CLIENT_ID:
        raise ConfigError("CAIRN_OIDC_ISSUER is set, so CAIRN_OIDC_CLIENT_ID must be set too")
CAIRN_PASSWORD_LOGIN = env_bool("CAIRN_PASSWORD_LOGIN", True)
if not CAIRN_PASSWORD_LOGIN and not CAIRN_OIDC_ISSUER and CAIRN_MODE == "team":
    raise ConfigError("CAIRN_PASSWORD_LOGIN=0 needs CAIRN_OIDC_ISSUER: nobody could sign in")
CAIRN_SCIM_TOKEN = env_str("CAIRN_SCIM_TOKEN")  # or CAIRN_SCIM_TOKEN_FILE
if CAIRN_SCIM_TOKEN is not None and len(CAIRN_SCIM_TOKEN) < 32:
    raise ConfigError("CAIRN_SCIM_TOKEN (CAIRN_SCIM_TOKEN_FILE) must hold at least 32 characters of random text")

# --- REST framework --------------------------------------------------------------

# Requests per window on the API, per API key (or per user without one): "600/min", "20/s", 0 = off.
CAIRN_RATE_LIMIT = env_rate("CAIRN_RATE_LIMIT", "600/min")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.ApiKeyAuthentication",
        "access.authentication.IdpTokenAuthentication",
        "access.authentication.PersonalModeAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "kb.api.parsers.StrictJSONParser",
        "kb.api.parsers.StrictMultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "kb.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # CAIRN_RATE_LIMIT requests per API key (or per user) and window: access/ratelimit.py.
    "DEFAULT_THROTTLE_CLASSES": ["access.ratelimit.ApiRateThrottle"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# The OpenAPI schema (/api/schema/) and its Swagger UI (/api/docs/), described in kb/api/schema.py.
SPECTACULAR_SETTINGS = {
    "TITLE": "Cairn API",
    "DESCRIPTION": ("Cairn's REST API: collections, documents, hybrid search, cited answers, sharing, "
                    "policies, evaluation, audit and API keys. Authenticate with `Authorization: Bearer` "
                    "and a Cairn API key or an access token from the configured identity provider; the web "
                    "UI's session works too. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],  # the schema describes no data
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["kb.api.schema.api_v1_only"],
    "ENUM_NAME_OVERRIDES": {"KeyState": ["active", "expired", "revoked"],
                            "TurnState": ["answered", "streaming", "stopped", "failed"]},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "kb.api.schema.errors_everywhere"],
}

# --- logging ---------------------------------------------------------------------

# One JSON object per line (team default: for a log collector) or one text line (personal default);
# both carry the request id, user id and task, and redact secrets (config/logs.py).
CAIRN_LOG_FORMAT = env_choice("CAIRN_LOG_FORMAT", "json" if CAIRN_MODE == "team" else "text", ("json", "text"))
CAIRN_LOG_LEVEL = env_choice("CAIRN_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "config.logs.JsonFormatter"},
        "text": {"()": "config.logs.TextFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": CAIRN_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": CAIRN_LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # faiss' loader says at INFO, in every process, which CPU build it could not load.
        "faiss.loader": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # One line per request (access.middleware.RequestIdMiddleware); CAIRN_REQUEST_LOG=0 turns it off.
        "cairn.requests": {"level": "INFO" if env_bool("CAIRN_REQUEST_LOG", True) else "WARNING"},
    },
}
if CAIRN_LOG_FORMAT == "json":
    # Nothing but JSON lines on the output: Python's warnings go through logging, and the
    # progress bars of model loading (tqdm, Hugging Face) are off.
    import logging as _logging

    _logging.captureWarnings(True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Celery workers keep the configuration above instead of installing their own handler and format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
