"""walkeeper for Django applications: add "walkeeper.contrib.django" to INSTALLED_APPS.

    python manage.py create_backup [--upload-to-sftp] [--base]
    python manage.py restore_backup FILE_OR_ID [--clean] [--noinput]
    python manage.py list_backups | backup_status | verify_backups | drill
    path("backups/", include("walkeeper.contrib.django.urls"))   # the staff dashboard

Settings (conf.py), system checks (checks.py), signals (signals.py). Every command is a
thin layer over the functions `walkeeper` itself calls. Needs `pip install walkeeper[django]`;
nothing else in walkeeper imports this package.
"""
