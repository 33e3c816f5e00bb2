"""Minimal Django settings: realip first in MIDDLEWARE."""

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "project.urls"
INSTALLED_APPS = ["realip.django.RealIPConfig"]  # manage.py check runs realip's checks
MIDDLEWARE = [
    "realip.django.RealIPMiddleware",
    "django.middleware.common.CommonMiddleware",
]
DATABASES: dict = {}
USE_TZ = True
