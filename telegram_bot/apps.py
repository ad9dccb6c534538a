from django.apps import AppConfig


class TelegramBotConfig(AppConfig):
    """The Telegram edge (aiogram). Its place in the layout; the bot arrives in its own issue."""

    name = "telegram_bot"
    verbose_name = "Telegram bot"
