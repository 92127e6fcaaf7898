"""BM25 in PostgreSQL for PgVector: term statistics kept beside the chunks, scored in SQL.

PostgreSQL's full-text search matches and stems (the table's `fts` tsvector, in the store's
text search configuration) but its ranking (`ts_rank_cd`) has no corpus statistics. So each
vector table has two side tables, kept by statement-level triggers in the same transaction
as every write:

- `<prefix>_terms (term, id, tf, len)`: a posting per lexeme of each chunk, its term
  frequency and the chunk's length in terms; primary key (term, id), so the postings of a
  query's terms are an index range;
- `<prefix>_stats (slot, docs, terms)`: the number of chunks and of their terms, spread over
  16 rows (by backend) so that concurrent writers do not queue on one row.

A keyword query scores the postings of its terms with BM25 (k1 = 1.2, b = 0.75; Lucene's
idf, df counted from the postings), then keeps the chunks that pass the query's required,
excluded and phrase parts (one tsquery on the GIN-indexed `fts`) and the metadata filter.
"""

from __future__ import annotations

from typing import Any

from agentkeep.vector_db.text import K1, B, QueryWords

STAT_SLOTS = 16


def table_names(sql: Any, schema: str, prefix: str) -> dict[str, Any]:
    """The side tables' names, as a statement's `{terms}`, `{df}` and `{stats}`."""
    return {"terms": sql.Identifier(schema, f"{prefix}_terms"), "df": sql.Identifier(schema, f"{prefix}_df"),
            "stats": sql.Identifier(schema, f"{prefix}_stats")}


def _names(sql: Any, schema: str, prefix: str) -> dict[str, Any]:
    return {**table_names(sql, schema, prefix), "fn": sql.Identifier(schema, f"{prefix}_bm25"),
            "slots": sql.Literal(STAT_SLOTS), "impact": sql.Identifier(f"{prefix}_impact")}


# what the triggers do with a set of rows `{src}` (id, fts) that arrive (sign 1) or leave (-1);
# counts go to the writer's slot (its backend), so concurrent writers update different rows
_LENGTH = "(SELECT coalesce(sum(cardinality(x.positions)), 0) FROM unnest(fts) x)"  # a chunk's terms
_SLOT = "pg_backend_pid() % {{slots}}"
_COUNT = (f"INSERT INTO {{{{stats}}}} AS s (slot, docs, terms) SELECT {_SLOT}, {{sign}}count(*),"
          f" {{sign}}coalesce(sum(len), 0) FROM (SELECT {_LENGTH} AS len FROM ({{src}}) src) r HAVING count(*) > 0"
          " ON CONFLICT (slot) DO UPDATE SET docs = s.docs + excluded.docs, terms = s.terms + excluded.terms")
_DF = (f"INSERT INTO {{{{df}}}} AS d (term, slot, df) SELECT l.lexeme, {_SLOT}, {{sign}}count(*)"
       " FROM ({src}) r, unnest(r.fts) l GROUP BY l.lexeme ORDER BY l.lexeme"
       " ON CONFLICT (term, slot) DO UPDATE SET df = d.df + excluded.df")
# a posting's impact is its BM25 term weight at the average length of the time it was written:
# it only orders a term's postings (a search scores with the current statistics)
_ADD = ("INSERT INTO {{terms}} (term, id, tf, len, impact)"
        " SELECT l.lexeme, r.id, cardinality(l.positions), r.len, cardinality(l.positions)::real"
        f" / (cardinality(l.positions) + {K1} * (1 - {B} + {B} * r.len / a.avgdl))"
        f" FROM (SELECT id, fts, {_LENGTH} AS len FROM ({{src}}) src) r, unnest(r.fts) l,"
        " (SELECT greatest(sum(terms), 1)::float8 / greatest(sum(docs), 1) AS avgdl FROM {{stats}}) a")
_REMOVE = ("DELETE FROM {{terms}} p USING (SELECT r.id, l.lexeme FROM ({src}) r, unnest(r.fts) l) g"
           " WHERE p.term = g.lexeme AND p.id = g.id")
_CHANGED = ("SELECT {side}.id, {side}.fts FROM old_rows o JOIN new_rows n ON n.id = o.id"
            " WHERE o.fts IS DISTINCT FROM n.fts")  # an update that keeps the text changes nothing


def _apply(src: str, sign: int) -> str:
    counts = [_COUNT.format(src=src, sign="-" if sign < 0 else ""), _DF.format(src=src, sign="-" if sign < 0 else "")]
    steps = [_REMOVE.format(src=src), *counts] if sign < 0 else [*counts, _ADD.format(src=src)]
    return ";\n    ".join(steps) + ";"


_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {{fn}}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    {_apply(_CHANGED.format(side="o"), -1)}
    {_apply(_CHANGED.format(side="n"), 1)}
  ELSIF TG_OP = 'DELETE' THEN
    {_apply("SELECT id, fts FROM old_rows", -1)}
  ELSE
    {_apply("SELECT id, fts FROM new_rows", 1)}
  END IF;
  RETURN NULL;
END $body$
"""


def setup(conn: Any, sql: Any, table: Any, schema: str, prefix: str) -> None:
    """The side tables, their triggers and, for a table that had none, its postings from the
    rows already there (idempotent; run under the table's advisory lock)."""
    names = {**_names(sql, schema, prefix), "t": table}
    exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{prefix}_terms"',)).fetchone()[0]
    if exists is not None:
        return
    conn.execute(sql.SQL("CREATE TABLE {terms} (term text NOT NULL, id text NOT NULL, tf integer NOT NULL,"
                         " len integer NOT NULL, impact real NOT NULL, PRIMARY KEY (term, id))").format(**names))
    conn.execute(sql.SQL("CREATE INDEX {impact} ON {terms} (term, impact DESC) INCLUDE (id, tf, len)").format(**names))
    conn.execute(sql.SQL("CREATE TABLE {df} (term text NOT NULL, slot integer NOT NULL, df bigint NOT NULL,"
                         " PRIMARY KEY (term, slot))").format(**names))
    conn.execute(sql.SQL("CREATE TABLE {stats} (slot integer PRIMARY KEY, docs bigint NOT NULL,"
                         " terms bigint NOT NULL)").format(**names))
    conn.execute(sql.SQL(_FUNCTION).format(**names))
    for event, refs in (("INSERT", "NEW TABLE AS new_rows"), ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                        ("DELETE", "OLD TABLE AS old_rows")):
        conn.execute(sql.SQL("CREATE TRIGGER {name} AFTER " + event + " ON {t} REFERENCING " + refs
                             + " FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(
            name=sql.Identifier(f"{prefix}_bm25_{event.lower()}"), **names))
    everything = sql.SQL("SELECT id, fts FROM {t}").format(**names).as_string(conn)
    for step in _apply(everything, 1).split(";")[:-1]:
        conn.execute(sql.SQL(step).format(**names))


def drop(conn: Any, sql: Any, schema: str, prefix: str) -> None:
    names = _names(sql, schema, prefix)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {terms}, {df}, {stats}").format(**names))
    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {fn}()").format(**names))


def tsquery(words: QueryWords, params: Any) -> str | None:
    """The tsquery of a query's required, excluded and phrase parts (None: it has none)."""
    parts = [f"plainto_tsquery(%(lang)s::regconfig, {params.add(w)})" for w in words.must]
    parts += [f"phraseto_tsquery(%(lang)s::regconfig, {params.add(p)})" for p in words.phrases]
    parts += [f"!! plainto_tsquery(%(lang)s::regconfig, {params.add(w)})" for w in words.must_not]
    parts += [f"!! phraseto_tsquery(%(lang)s::regconfig, {params.add(p)})" for p in words.excluded_phrases]
    return " && ".join(f"({p})" for p in parts) or None


def keyword_select(words: QueryWords, params: Any, filtered: bool, depth: int | None) -> str:
    """A statement (with `{t}`, `{terms}`, `{df}`, `{stats}`, `{cols}`, `{n}` and, when
    `filtered`, the metadata filter's `{where}` to fill) of the best chunks for a query by BM25,
    as (cols..., score), scoring each term's `depth` postings of highest impact (None: all)."""
    params.values["ranked"] = " ".join((*words.should, *words.must, *words.phrases))
    params.values["depth"] = depth
    narrow = tsquery(words, params)
    # a mark whose words PostgreSQL drops (its stop words, punctuation) narrows nothing, as in
    # the analyzer of every other store: an empty tsquery is no condition
    narrowing = f"(numnode({narrow}) = 0 OR t.fts @@ ({narrow}))" if narrow else ""
    conditions = [c for c in ("{where}" if filtered else "", narrowing) if c]
    scores = (
        "WITH q AS (SELECT DISTINCT lexeme AS term FROM unnest(to_tsvector(%(lang)s::regconfig, %(ranked)s))),"
        " s AS (SELECT greatest(sum(docs), 1)::float8 AS n, greatest(sum(terms), 1)::float8 / greatest(sum(docs), 1)"
        " AS avgdl FROM {stats}),"
        " w AS (SELECT q.term, ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS idf FROM q CROSS JOIN s"
        " CROSS JOIN LATERAL (SELECT coalesce(sum(df), 0)::float8 AS df FROM {df} WHERE term = q.term) d),"
        # each term's postings by impact, at most %(depth)s of them (NULL: all), an index range
        # per term whatever the planner's statistics say (OFFSET 0 keeps the subquery apart)
        f" sc AS (SELECT p.id, sum(w.idf * p.tf * {K1 + 1} / (p.tf + {K1} * (1 - {B} + {B} * p.len / s.avgdl)))"
        " AS score FROM w CROSS JOIN s CROSS JOIN LATERAL (SELECT id, tf, len FROM {terms} WHERE term = w.term"
        " ORDER BY impact DESC LIMIT %(depth)s OFFSET 0) p GROUP BY p.id)"
    )
    if not conditions:  # the best ids first, then their rows
        return (scores + ", top AS (SELECT id, score FROM sc ORDER BY score DESC, id LIMIT {n})"
                " SELECT {cols}, top.score FROM top JOIN {t} t ON t.id = top.id ORDER BY top.score DESC, t.id")
    # the scored ids best first, each row looked up by key and checked, until n pass
    return (scores + " SELECT {cols}, top.score FROM (SELECT id, score FROM sc ORDER BY score DESC, id) top"
            " CROSS JOIN LATERAL (SELECT * FROM {t} t WHERE t.id = top.id AND " + " AND ".join(conditions)
            + " OFFSET 0) t ORDER BY top.score DESC, top.id LIMIT {n}")
