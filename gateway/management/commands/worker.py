from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Runs the agents' workers: django-q2's qcluster, with the model client loaded first."

    def handle(self, *args, **options):
        # Loaded in the parent before qcluster forks its workers, so they share these pages
        # and no worker's first answer waits ~1 s for the openai SDK to import.
        import agents.openai_client  # noqa: F401
        import gateway.tasks  # noqa: F401

        call_command("qcluster")
