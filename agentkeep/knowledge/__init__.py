"""Knowledge: contents in a catalog db, their chunks and embeddings in a vector store.

    from agentkeep.knowledge import Knowledge, HashingEmbedder, OpenAIEmbedder
"""

from agentkeep.knowledge.chunking import Chunker, FixedSizeChunker, MarkdownChunker, TextChunk
from agentkeep.knowledge.embedder import (
    Embedder,
    EmbedderError,
    HashingEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from agentkeep.knowledge.knowledge import INGEST_KEY, OWNER_KEY, AddResult, Knowledge
from agentkeep.knowledge.readers import (
    CsvReader,
    HtmlReader,
    JsonReader,
    MarkdownReader,
    PdfReader,
    Reader,
    ReaderError,
    Section,
    TextReader,
    reader_for,
)
from agentkeep.knowledge.rerank import CrossEncoderReranker, Reranker

__all__ = [
    "AddResult", "Chunker", "CrossEncoderReranker", "CsvReader", "Embedder", "EmbedderError", "FixedSizeChunker", "HashingEmbedder",
    "HtmlReader", "INGEST_KEY", "JsonReader", "Knowledge", "MarkdownChunker", "MarkdownReader", "OWNER_KEY",
    "OpenAIEmbedder",
    "PdfReader", "Reader", "ReaderError", "Reranker", "Section", "SentenceTransformerEmbedder", "TextChunk", "TextReader",
    "reader_for",
]
