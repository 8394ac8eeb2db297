"""manage.py verify_backups: `walkeeper verify-chain`."""

from walkeeper.contrib.django.commands import WalkeeperCommand


class Command(WalkeeperCommand):
    help = ("Read every stored object back and check it, and that the WAL chain has no gap "
            "(walkeeper verify-chain). Exit 1 when a problem is found.")
    walkeeper_command = "verify-chain"

    def run(self, cfg, options) -> None:
        from walkeeper import commands

        report = commands.verify_chain(cfg, None, False, self.progress(options))
        self.write("verify-chain", report, options)
        error = commands.verdict("verify-chain", report)
        if error is not None:
            raise error
