"""Realistic, deterministic payloads for the benchmarks (no agentkeep import at module level
so the raw sqlite3 baselines can use the text helpers without loading pydantic)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random

UTC = dt.timezone.utc

_WORDS = (
    "agent tool call result context memory session user question answer search model token "
    "latency retrieval document vector index summary plan step reason observe action cache "
    "weather booking invoice customer order refund shipping policy account password reset "
    "report chart table query filter sort page cursor schema migrate backup restore export "
    "import trace span error retry timeout schedule cron approval review deploy release"
).split()

TOPICS = ["work", "family", "food", "travel", "health", "music", "sports", "tech", "finance", "books"]


def text(rnd: random.Random, n_chars: int) -> str:
    """Roughly n_chars of lower-case prose (cheap: a few hundred word picks)."""
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rnd.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return (" ".join(out))[:n_chars].capitalize() + "."


def hex_id(rnd: random.Random, n_bytes: int) -> str:
    return rnd.getrandbits(n_bytes * 8).to_bytes(n_bytes, "big").hex()


def run_payload(rnd: random.Random, i: int, size: str = "normal") -> dict:
    """The fields of a realistic agent run: 5 messages incl. a tool call, ~1 KB of text.

    size="small" (~400 B of text) is used for the 100k-session export/import dataset.
    """
    k = 1.0 if size == "normal" else 0.4
    question = text(rnd, int(140 * k))
    tool_out = text(rnd, int(260 * k))
    answer = text(rnd, int(560 * k))
    call_id = f"call_{hex_id(rnd, 6)}"
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Use the tools when useful."},
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "search_docs", "arguments": json.dumps({"query": question[:60], "k": 5})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "name": "search_docs", "content": tool_out},
        {"role": "assistant", "content": answer},
    ]
    in_tok = 300 + rnd.randint(0, 900)
    out_tok = 50 + rnd.randint(0, 400)
    return dict(
        agent_id="support-agent",
        status="completed",
        input=question,
        content=answer,
        messages=messages,
        tools=[{"name": "search_docs", "args": {"k": 5}, "ok": True}],
        metrics=dict(
            input_tokens=in_tok,
            output_tokens=out_tok,
            total_tokens=in_tok + out_tok,
            cost=round((in_tok * 0.15 + out_tok * 0.6) / 1e6, 8),
            duration_ms=round(400 + rnd.random() * 3000, 3),
            model="gpt-4o-mini",
            provider="openai",
        ),
        metadata={"turn": i, "channel": "web"},
    )


def session_payload(rnd: random.Random, i: int) -> dict:
    return dict(
        agent_id="support-agent",
        name=f"Conversation {i}: " + text(rnd, 30),
        state={"step": i % 7, "cart": [{"sku": f"SKU-{rnd.randint(1, 9999)}", "qty": rnd.randint(1, 3)}], "lang": "en"},
        metadata={"source": "web", "ab_bucket": rnd.choice("ABCD")},
    )


def memory_payload(rnd: random.Random, user_id: str) -> dict:
    return dict(
        user_id=user_id,
        memory=f"The user mentioned that {text(rnd, 110)}",
        topics=rnd.sample(TOPICS, rnd.randint(1, 3)),
        input=text(rnd, 60),
        agent_id="support-agent",
    )


def span_batch(rnd: random.Random, batch_no: int, traces: int = 10, spans_per_trace: int = 10) -> list[dict]:
    """`traces` traces of `spans_per_trace` spans: an agent root, LLM calls and tool calls."""
    base = dt.datetime(2025, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=batch_no * 60)
    out: list[dict] = []
    for t in range(traces):
        trace_id = hex_id(rnd, 16)
        root_id = hex_id(rnd, 8)
        user = f"user-{rnd.randint(0, 99):03d}"
        session = f"sess-{rnd.randint(0, 999):04d}"
        run_id = hex_id(rnd, 16)
        t0 = base + dt.timedelta(milliseconds=t * 1500)
        total_ms = 800 + rnd.random() * 4000
        out.append(
            dict(
                span_id=root_id, trace_id=trace_id, parent_span_id=None, name="support-agent.run",
                kind="INTERNAL", status_code="OK", start_time=t0,
                end_time=t0 + dt.timedelta(milliseconds=total_ms), duration_ms=round(total_ms, 3),
                attributes={
                    "agentkeep.run_id": run_id, "session.id": session, "user.id": user,
                    "agentkeep.agent_id": "support-agent", "openinference.span.kind": "AGENT",
                    "input.value": text(rnd, 120),
                },
            )
        )
        step = total_ms / spans_per_trace
        for s in range(1, spans_per_trace):
            is_llm = s % 2 == 1
            st = t0 + dt.timedelta(milliseconds=s * step)
            err = rnd.random() < 0.02
            attrs = (
                {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
                 "llm.token_count.prompt": rnd.randint(200, 2000), "llm.token_count.completion": rnd.randint(20, 400),
                 "input.value": text(rnd, 200), "output.value": text(rnd, 120)}
                if is_llm
                else {"openinference.span.kind": "TOOL", "tool.name": "search_docs",
                      "tool.parameters": json.dumps({"query": text(rnd, 40)}), "output.value": text(rnd, 120)}
            )
            out.append(
                dict(
                    span_id=hex_id(rnd, 8), trace_id=trace_id, parent_span_id=root_id,
                    name="chat gpt-4o-mini" if is_llm else "tool search_docs",
                    kind="CLIENT" if is_llm else "INTERNAL",
                    status_code="ERROR" if err else "OK", status_message="timeout" if err else None,
                    start_time=st, end_time=st + dt.timedelta(milliseconds=step * 0.9),
                    duration_ms=round(step * 0.9, 3), attributes=attrs,
                    events=[{"name": "retry", "attributes": {"attempt": 1}}] if err else [],
                )
            )
    return out


def seed(*parts: object) -> random.Random:
    return random.Random("|".join(map(str, parts)) + os.environ.get("BENCH_SEED", ""))
