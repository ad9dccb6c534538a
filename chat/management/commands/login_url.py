from django.core.management.base import BaseCommand

from chat.login import login_rotate, login_token_issue, login_url, owner_get


class Command(BaseCommand):
    help = "Prints a new one-time login URL for the owner."

    def add_arguments(self, parser):
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Also sign out everywhere: earlier unused links stop working, every session ends "
            "and open chat pages are disconnected.",
        )

    def handle(self, *args, rotate=False, **options):
        if rotate:
            token = login_rotate()
        else:
            owner_get()
            token = login_token_issue()
        self.stdout.write(login_url(token))
