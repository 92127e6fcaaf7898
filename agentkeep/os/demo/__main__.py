"""`python -m agentkeep.os.demo [--port 7777] [--host 127.0.0.1] [--db URL] [--model ID]
[--data-dir DIR] [--max-tokens N]`: the demo server, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from agentkeep.os.demo.app import DEFAULT_DATA_DIR, DEFAULT_DB_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkeep.os.demo",
                                     description="Serve the demo analyst agent over HTTP until Ctrl-C.")
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db", default=DEFAULT_DB_URL, metavar="URL",
                        help=f"where the agent's records go (default: {DEFAULT_DB_URL})")
    parser.add_argument("--model", metavar="ID", help="a model of the OpenAI-compatible server at "
                        "$OPENAI_BASE_URL (with $OPENAI_API_KEY) instead of the local SmolLM2 model")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                        help=f"the app database and the knowledge index (default: ./{DEFAULT_DATA_DIR}/)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="the longest answer (local model: 256)")
    parser.add_argument("--insecure", action="store_true", help="bind a non-loopback --host without auth")
    args = parser.parse_args(argv)

    from agentkeep.os.demo.run import serve_demo

    return serve_demo(host=args.host, port=args.port, db_url=args.db, model=args.model, data_dir=args.data_dir,
                      max_tokens=args.max_tokens, insecure=args.insecure)


if __name__ == "__main__":
    sys.exit(main())
