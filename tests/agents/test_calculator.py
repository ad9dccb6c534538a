import json

from pathlib import Path

import pytest

from agents.tools import ToolInputError, ToolScope, ToolSet
from agents.tools.calculator import evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 * (3 + 4)", 14),
        ("(17.5 * 4) / 3", 70 / 3),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ^ 10", 1024),
        ("-3 + +5", 2),
        ("sqrt(16) + abs(-2)", 6),
        ("max(1, 5, 3) * round(2.6)", 15),
        ("10 / 4", 2.5),
        ("2 * pi", 6.283185307179586),
    ],
)
def test_it_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


def test_whole_results_come_back_as_integers():
    assert isinstance(evaluate("10 / 2"), int)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("1 / 0", "Division by zero."),
        ("5 % 0", "Division by zero."),
        ("2 ** 100000", "Exponents above 10000 are not allowed."),
        ("9 ** 9 ** 9", "Exponents above 10000 are not allowed."),
        ("10.0 ** 400", "Math error"),
        ("10 ** 400", "The result is too large"),
        ("sqrt(-1)", "Math error"),
        ("", "Give an expression"),
        ("1 +", "Could not read"),
        ("1" * 501, "longer than 500 characters"),
    ],
)
def test_it_refuses_what_it_cannot_compute(expression, error):
    with pytest.raises(ToolInputError, match=error.replace("(", r"\(")):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "().__class__.__bases__",
        "open('/etc/passwd')",
        "x + 1",
        "(1).real",
        "sqrt.__call__(4)",
        "lambda: 1",
        "[1, 2]",
        "'text'",
        "True + 1",
        "round(2.5, ndigits=1)",
    ],
)
def test_names_attributes_and_calls_beyond_arithmetic_are_refused(expression):
    with pytest.raises(ToolInputError, match="Only numbers"):
        evaluate(expression)


def test_the_tool_returns_the_expression_and_result_and_errors_as_data():
    tools = ToolSet.for_agent(["calculator", "no-such-tool"], ToolScope(owner_id=1, thread_id=1, agent_id=None, workspace=Path("/nonexistent")))

    ok = tools.call("calculator", '{"expression": "6 * 7"}')
    refused = tools.call("calculator", '{"expression": "__import__(\'os\')"}')
    bad_json = tools.call("calculator", "{expression: 1}")
    wrong_args = tools.call("calculator", '{"expr": "1"}')

    assert (json.loads(ok.content), ok.is_error) == ({"expression": "6 * 7", "result": 42}, False)
    assert refused.is_error and "Only numbers" in json.loads(refused.content)["error"]
    assert bad_json.is_error and "not valid JSON" in json.loads(bad_json.content)["error"]
    assert wrong_args.is_error and "this tool takes {expression: string}" in json.loads(wrong_args.content)["error"]
    assert [s["function"]["name"] for s in tools.schemas()] == ["calculator"]
