from django.core.management.base import BaseCommand

from chat.login import login_token_issue, login_url, owner_get


class Command(BaseCommand):
    help = "Prints a new one-time login URL for the owner."

    def handle(self, *args, **options):
        owner_get()
        self.stdout.write(login_url(login_token_issue()))
