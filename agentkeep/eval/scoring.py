"""How answers are scored: the default normalized match, the messages a judge model is sent,
and the parsing of its replies. Judges are models, and models do not always answer in the
format asked for, so a reply is read as JSON first, then as text ("Score: 7", "7/10", "2.
FAIL - ..."); a reply that holds no grade at all is a `JudgeError`, never a silent zero."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

# words and numbers; "3.14", "1,000" and "don't" stay one token each
_TOKEN = re.compile(r"\w+(?:[.,']\w+)*")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_SCORE_LABEL = re.compile(r"\b(?:score|grade|rating)\b\s*(?:is|of|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_VERDICT_LINE = re.compile(
    r"^\W*(?:criterion\s*)?(\d+)\s*[.:)\]-]?\s*[*_]*\s*(pass(?:ed)?|fail(?:ed)?|yes|no|true|false|met|not met)\b"
    r"[*_]*\s*[:.,;)\-]*\s*(.*)$", re.IGNORECASE)
TRUE_WORDS = {"pass", "passed", "yes", "true", "met"}
FALSE_WORDS = {"fail", "failed", "no", "false", "not met"}


class JudgeError(Exception):
    """The judge's reply holds no grade that can be read."""


def as_text(value: Any) -> str:
    """An agent's answer as text (structured content as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    return json.dumps(value, default=str, ensure_ascii=False)


def tokens(text: str) -> list[str]:
    """Case, accents' composition, punctuation and spacing left out: what a match compares."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def match_score(output: str, expected: str) -> tuple[float, str]:
    """1.0 when the normalized answer is the expected one ("exact") or holds it as a run of
    whole words ("contains": "Paris" in "It is Paris.", but "4" not in "14"); else 0.0."""
    got, want = tokens(output), tokens(expected)
    if not want:  # nothing but punctuation expected: compare the text itself
        return (1.0, "exact") if output.strip() == expected.strip() else (0.0, "none")
    if got == want:
        return 1.0, "exact"
    size = len(want)
    if any(got[i:i + size] == want for i in range(len(got) - size + 1)):
        return 1.0, "contains"
    return 0.0, "none"


def check_score(value: Any, what: str) -> float:
    """A scoring function's result as a float in [0, 1] (a bool counts as 1 or 0)."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{what} must return a number in [0, 1], got {value!r}")
    return float(value)


# -- a grade on a 0-10 scale ------------------------------------------------------------------

GRADE_SYSTEM = (
    "You grade the answer of an AI agent against the expected answer. Give a score from 0 to 10: 10 when the "
    "answer says what the expected answer says (wording may differ), 0 when it is wrong or missing, in between "
    "for a partly right answer. Reply with JSON only: {\"score\": <0-10>, \"reason\": \"<one sentence>\"}."
)


def grade_messages(input: str, output: str, expected: str, guidelines: str | None = None) -> list[dict]:
    parts = [f"<question>\n{input}\n</question>", f"<expected_answer>\n{expected}\n</expected_answer>",
             f"<agent_answer>\n{output}\n</agent_answer>"]
    if guidelines:
        parts.append(f"<guidelines>\n{guidelines}\n</guidelines>")
    return [{"role": "system", "content": GRADE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_grade(reply: str) -> tuple[float, str]:
    """(grade in [0, 10], reason) from a judge's reply: a JSON object's "score", else a
    labelled number ("Score: 7"), a number out of ten ("7/10"), or a reply that is a number."""
    text = reply or ""
    found = _json_value(text)
    if isinstance(found, dict):
        raw = next((found[k] for k in ("score", "grade", "rating") if k in found), None)
        reason = str(found.get("reason") or found.get("explanation") or "")
        if raw is not None:
            return _grade(raw, text), reason
    for pattern in (_SCORE_LABEL, _OUT_OF_TEN):
        hit = pattern.search(text)
        if hit:
            return _grade(hit.group(1), text), text.strip()[:500]
    bare = text.strip().rstrip(".")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", bare):
        return _grade(bare, text), ""
    raise JudgeError(f"the judge's reply holds no score: {_excerpt(text)}")


def _grade(raw: Any, reply: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise JudgeError(f"the judge's score is not a number: {raw!r}") from None
    if math.isnan(value) or not 0 <= value <= 10:
        raise JudgeError(f"the judge's score {value:g} is outside 0-10: {_excerpt(reply)}")
    return value


# -- pass or fail per criterion ---------------------------------------------------------------

CRITERIA_SYSTEM = (
    "You check the answer of an AI agent against a list of criteria. For each criterion decide whether the "
    "answer meets it. Reply with JSON only: {\"verdicts\": [{\"criterion\": <its number>, \"passed\": true or "
    "false, \"reason\": \"<one sentence>\"}, ...]}, one verdict per criterion, in order."
)


def criteria_messages(input: str | None, output: str, criteria: list[str]) -> list[dict]:
    numbered = "\n".join(f"{i}. {c}" for i, c in enumerate(criteria, 1))
    parts = [f"<question>\n{input}\n</question>"] if input else []
    parts += [f"<agent_answer>\n{output}\n</agent_answer>", f"<criteria>\n{numbered}\n</criteria>"]
    return [{"role": "system", "content": CRITERIA_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_verdicts(reply: str, count: int) -> list[tuple[bool, str]]:
    """(passed, reason) for each of `count` criteria, in order: from JSON (a "verdicts" list,
    or a bare list), else from lines such as "2. FAIL - the tone is curt"."""
    text = reply or ""
    found: dict[int, tuple[bool, str]] = {}
    value = _json_value(text)
    items = value.get("verdicts", value.get("criteria")) if isinstance(value, dict) else value
    if isinstance(items, list):
        for position, item in enumerate(items, 1):
            if not isinstance(item, dict):
                continue
            passed = _truth(item.get("passed", item.get("pass", item.get("verdict"))))
            number = item.get("criterion", item.get("index", item.get("id")))
            index = number if isinstance(number, int) and not isinstance(number, bool) else position
            if passed is not None and 1 <= index <= count:
                found.setdefault(index, (passed, str(item.get("reason") or "")))
    if len(found) < count:
        for line in text.splitlines():
            hit = _VERDICT_LINE.match(line)
            if hit and 1 <= int(hit.group(1)) <= count:
                found.setdefault(int(hit.group(1)), (_truth(hit.group(2)), hit.group(3).strip().lstrip("-–—:. ")))
    missing = [i for i in range(1, count + 1) if i not in found]
    if missing:
        raise JudgeError(f"the judge gave no verdict for criteria {missing}: {_excerpt(text)}")
    return [found[i] for i in range(1, count + 1)]


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = " ".join(value.lower().split())
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


# -- reading JSON out of a reply --------------------------------------------------------------

def _json_value(text: str) -> Any:
    """The first JSON object or list in `text` (inside a ``` fence or not), or None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for start, char in enumerate(chunk):
            if char not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except ValueError:
                continue
            if isinstance(value, (dict, list)):
                return value
    return None


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat[:200] + ("..." if len(flat) > 200 else ""))
