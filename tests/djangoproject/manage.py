#!/usr/bin/env python3
"""python tests/djangoproject/manage.py ... (the WK_DJANGO_DB_* variables name the database)."""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
