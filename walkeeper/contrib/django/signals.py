"""Signals sent by `create_backup`, so that the application can notify someone.

    backup_started   kind ("dump" or "base"), database, alias
    backup_finished  kind, database, alias, info (the backup's metadata: the
                     `dump --json` / `basebackup --json` object)
    backup_failed    kind, database, alias, error (one line), exit_code

The sender is the command's class. A receiver that raises does not stop the backup:
signals are sent with send_robust and a failing receiver is reported as a warning.
"""

from django.dispatch import Signal

backup_started = Signal()
backup_finished = Signal()
backup_failed = Signal()
