"""Semantic preservation: how much of the original function a candidate repair keeps.

Two views, averaged (CodeBLEU's idea without its tree-sitter dependency and weights tuned for
translation):

* lexical - ``difflib`` ratio of the Python token streams (comments, blank lines, indentation dropped),
  so renaming or rewriting lines lowers it, reformatting does not;
* syntactic - Dice overlap of the multisets of AST edges (parent type, field, child type) with the
  identifier/literal at leaves, so a structurally equal rewrite keeps a high score and deleting the body
  or wrapping it in new control flow lowers it.

Why not CodeBLEU: it needs tree-sitter grammars (not installed, offline) and its n-gram weights reward
long copies; our two terms measured the same ordering on SVEN (see docs/security-reward.md).
"""
from __future__ import annotations

import ast
import difflib
import io
import tokenize
from collections import Counter
from functools import lru_cache

from rewards.security.source import normalize_source, parse

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENCODING, tokenize.ENDMARKER}


@lru_cache(maxsize=4096)
def code_tokens(code: str) -> tuple[str, ...]:
    """Python tokens of ``code`` without layout or comments; a whitespace split if it does not tokenize."""
    src = normalize_source(code)
    try:
        return tuple(t.string for t in tokenize.generate_tokens(io.StringIO(src).readline)
                     if t.type not in _SKIP)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return tuple(src.split())


def _leaf(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"Name:{node.id}"
    if isinstance(node, ast.Attribute):
        return f"Attr:{node.attr}"
    if isinstance(node, ast.Constant):
        return f"Const:{type(node.value).__name__}"
    if isinstance(node, ast.arg):
        return f"arg:{node.arg}"
    return type(node).__name__


@lru_cache(maxsize=4096)
def ast_edges(code: str) -> Counter | None:
    """Multiset of (parent, field, child) edges; None when the code does not parse."""
    tree = parse(code)
    if tree is None:
        return None
    edges: Counter = Counter()
    for parent in ast.walk(tree):
        for fname, value in ast.iter_fields(parent):
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST) and not isinstance(child, (ast.expr_context, ast.operator)):
                    edges[(type(parent).__name__, fname, _leaf(child))] += 1
    return edges


def lexical_similarity(a: str, b: str) -> float:
    ta, tb = code_tokens(a), code_tokens(b)
    if not ta and not tb:
        return 1.0
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def syntactic_similarity(a: str, b: str) -> float:
    ea, eb = ast_edges(a), ast_edges(b)
    if ea is None or eb is None:
        return 0.0
    total = sum(ea.values()) + sum(eb.values())
    return 1.0 if total == 0 else 2 * sum((ea & eb).values()) / total


def similarity(a: str, b: str) -> float:
    """Mean of lexical and syntactic similarity, in [0, 1]."""
    return 0.5 * lexical_similarity(a, b) + 0.5 * syntactic_similarity(a, b)
