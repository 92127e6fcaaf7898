"""Vector stores: one shared interface (`VectorDb`), one module per store.

    from agentkeep.vector_db.pgvector import PgVector          # PostgreSQL + pgvector
    from agentkeep.vector_db.in_memory import InMemoryVectorDb  # this process, exact search

Importing this package imports no store's driver.
"""

from agentkeep.vector_db.base import SEARCH_TYPES, Chunk, SearchHit, SearchType, VectorDb, check_filters, matches

__all__ = ["SEARCH_TYPES", "Chunk", "SearchHit", "SearchType", "VectorDb", "check_filters", "matches"]
