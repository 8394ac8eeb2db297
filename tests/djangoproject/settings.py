import os

SECRET_KEY = "walkeeper-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "djangoproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "walkeeper.contrib.django",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [],
              "APP_DIRS": True, "OPTIONS": {}}]

def _database(name: str) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("WK_DJANGO_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("WK_DJANGO_DB_PORT", "5432"),
        "NAME": name,
        "USER": os.environ.get("WK_DJANGO_DB_USER", "app"),
        "PASSWORD": os.environ.get("WK_DJANGO_DB_PASSWORD", ""),
    }


# tests/test_django.py fills in HOST, PORT and PASSWORD once its cluster runs.
DATABASES = {"default": _database("app"), "copy": _database("app_copy")}

# The runbook's settings; each test overrides them (django.test.override_settings).
BACKUP_DIR = os.environ.get("WK_DJANGO_BACKUP_DIR", "/tmp/walkeeper-django-test-backups")
BACKUP_RETENTION_COUNT = 10
BACKUP_SFTP_ENABLED = False
