"""The vector-store interface: records, metadata filters, and the abstract `VectorDb`.

A vector store holds the chunks of a knowledge base: text, its embedding, the id of the
content it came from, its position in that content and a JSON metadata object. Every store
offers the same operations with the same semantics:

- `create(dimensions=None)` (idempotent), `exists()`, `drop()`
- `upsert(chunks)` (a chunk with an existing id replaces it), `replace(content_id, chunks)`
  (the content's chunks become exactly these, atomically), `get(ids)`
- `delete(ids=..., content_id=..., filters=...)` (the conditions given are AND-ed)
- `search(query, embedding=..., limit=5, filters=None, search_type=None)`: "vector"
  (nearest embeddings), "keyword" (full-text match of the query) or "hybrid"
  (reciprocal-rank fusion of both candidate lists)
- `count(content_id=None, filters=None)`

Metadata filters are a dict of top-level keys to scalar values (str, int, float, bool),
matched by equality and AND-ed: `{"team": "support", "year": 2024}`; a key may instead take
`{"$in": [v1, v2, ...]}` (1..100 scalars): it matches when the key holds any of them,
`{"team": {"$in": ["support", "sales"]}, "year": 2024}`. Numbers compare by value (1 matches
1.0), booleans only match booleans, strings match exactly; a key that is missing, or holds a
list or an object, does not match. Anything else is refused with `InvalidInputError`, so no
filter is ever silently ignored. Every store applies the whole filter inside each query it
sends (never to the hits afterwards), so a search returns `limit` hits whenever that many
chunks match.
"""

# every name the stores and their callers import from here
from agentkeep.vector_db.checks import *  # noqa: F403
from agentkeep.vector_db.core import *  # noqa: F403
from agentkeep.vector_db.filters import *  # noqa: F403
