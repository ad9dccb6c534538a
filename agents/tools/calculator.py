"""calculator: arithmetic on numbers, evaluated by walking the syntax tree (never eval)."""

import ast
import math
import operator

from . import Tool, ToolInputError

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 10_000
MAX_MAGNITUDE = 1e300

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan, "log": math.log,
    "log10": math.log10, "exp": math.exp, "abs": abs, "round": round, "min": min, "max": max,
    "floor": math.floor, "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression. Raises ToolInputError saying what is wrong."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolInputError("Give an expression such as '2 * (3 + 4)'.")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolInputError(f"Could not read {expression!r} as arithmetic. Use numbers, + - * / // % ** and ().") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolInputError("Division by zero.") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolInputError(f"Math error: {exc}.") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _eval(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolInputError(f"Exponents above {MAX_EXPONENT} are not allowed.")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ToolInputError("The result is too large (or not a real number).")
        return value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        return _FUNCTIONS[node.func.id](*[_eval(a) for a in node.args])
    allowed = ", ".join(sorted(_FUNCTIONS))
    raise ToolInputError(f"Only numbers, + - * / // % **, parentheses, pi, e and {allowed} are allowed.")


def _build(scope):
    def calculator(expression: str):
        return {"expression": expression, "result": evaluate(expression)}

    return calculator


TOOL = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression exactly, e.g. '(17.5 * 4) / 3' or 'sqrt(2) ** 10'.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "The arithmetic expression."}},
        "required": ["expression"],
    },
    read_only=True,
    build=_build,
)
