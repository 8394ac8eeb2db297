"""A minimal Django project for tests/test_django.py: walkeeper.contrib.django installed,
the dashboard at /backups/, the database from the WK_DJANGO_DB_* variables the tests set
(a real PostgreSQL 15 cluster with password authentication)."""
