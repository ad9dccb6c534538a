from django.core.management.base import BaseCommand, CommandError

from agents.providers import providers_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypts every provider's stored API key with the newest encryption key (the first in "
        "HEARTH_ENCRYPTION_KEYS or DATA_DIR/encryption_keys), so older keys can then be removed."
    )

    def handle(self, *args, **options):
        done, unreadable = providers_reencrypt()
        self.stdout.write(f"Re-encrypted the API keys of {done} provider{'' if done == 1 else 's'}.")
        if unreadable:
            raise CommandError(
                f"No encryption key decrypts the API key of: {', '.join(unreadable)}. Keep the old keys until "
                "these are entered again in the admin (or put back the key they were saved with)."
            )
