"""ask_user: pause the run and put a question to the user in the channel the run came from.

The tool itself only checks the question; the loop sees `pauses_run`, ends the run's current
part as "waiting", and the user's next message in the thread becomes this call's result
(gateway.services.message_submit). Everything is in the database, so the pause survives a
worker restart.
"""

from . import Tool, ToolInputError

MAX_QUESTION_CHARS = 1000


def _build(scope):
    def ask_user(question: str):
        question = question.strip()
        if not question:
            raise ToolInputError("The question is empty. Ask one clear question, e.g. {\"question\": \"Which city?\"}.")
        if len(question) > MAX_QUESTION_CHARS:
            raise ToolInputError(f"Keep the question under {MAX_QUESTION_CHARS} characters.")
        return {"question": question}

    return ask_user


TOOL = Tool(
    name="ask_user",
    description="Ask the user a question and wait for the answer. Use it only when you cannot go on "
    "without information that only the user has; the user's reply comes back as this tool's result.",
    parameters={
        "type": "object",
        "properties": {"question": {"type": "string", "description": "One clear question for the user."}},
        "required": ["question"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
    pauses_run=True,
)
