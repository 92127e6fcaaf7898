"""Retrieval quality on a small labelled set: hybrid search beats vector and keyword search.

Two kinds of queries, each with one relevant chunk:
- identifier queries ("ERR-4471"): the words a dense model cannot place, which full-text
  search matches exactly;
- paraphrase queries ("how often should credentials be renewed"): few or no words in common with
  the answer, which full-text search ranks low or misses and embeddings find.

The embedder below stands in for a dense model: words map to concepts (synonyms share
one), and words it does not know (identifiers, codes) carry no meaning, as rare tokens do
for real sentence embedders, so a bare code lands nearest to the pages about nothing in
particular. Recall@5 for each search type and query kind is printed
(`-s`) and asserted.
"""

from __future__ import annotations

import math
import re

import pytest

from agentkeep.vector_db import Chunk

CONCEPTS = {
    "rotate": "rotate rotating rotation renew renewed renewing cycle cycling replace replacing refresh",
    "key": "key keys credential credentials secret secrets token tokens",
    "often": "often frequency frequently every interval schedule days",
    "password": "password passwords passphrase login",
    "reset": "reset recover forgot forgotten",
    "disk": "disk disks storage volume volumes space",
    "full": "full quota exceeded capacity limit",
    "deploy": "deploy deploys deployment release releases ship rollout",
    "undo": "rollback revert undo previous",
    "invoice": "invoice invoices bill billed billing charge charged charges payment",
    "refund": "refund refunds reimburse reimbursed money",
    "slow": "slow latency sluggish lag delays",
    "database": "database databases db postgres sql query queries",
    "backup": "backup backups snapshot snapshots",
    "restore": "restore restoring restored",
    "email": "email emails mail inbox notification notifications",
    "user": "user users account accounts member members",
    "delete": "delete remove removal erase",
    "team": "team teams organization organisation workspace",
    "invite": "invite invitation join add",
    "export": "export download extract",
    "report": "report reports csv spreadsheet",
    "error": "error errors failure failed fault",
    "network": "network connection timeout timeouts unreachable",
    "certificate": "certificate certificates tls ssl https",
    "expire": "expire expires expired expiry expiration",
}
WORD_TO_CONCEPT = {w: i for i, (_, words) in enumerate(CONCEPTS.items()) for w in words.split()}
DIM = len(CONCEPTS) + 1


def concept_embedding(text: str) -> list[float]:
    vec = [0.0] * DIM
    vec[-1] = 0.05  # every text has some direction
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in WORD_TO_CONCEPT:
            vec[WORD_TO_CONCEPT[word]] += 1.0
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec]


DOCS = {
    "keys-rotate": "Rotate API keys every 90 days from the security console.",
    "keys-create": "API keys are shown once after creation; store the secret safely.",
    "keys-scope": "Each API key has scopes that limit what the token may do.",
    "pw-reset": "Forgot your password? Use the reset link on the login page.",
    "pw-policy": "Passwords need twelve characters and must not reuse the previous five.",
    "disk-full": "Error ERR-4471 means the disk quota is exceeded on the volume.",
    "disk-resize": "Resize a storage volume from the console without downtime.",
    "deploy-rollback": "To revert a release, run the rollback command on the previous deployment.",
    "deploy-canary": "Canary deployments ship a release to five percent of users first.",
    "invoice-date": "Invoices are emailed on the first day of each month.",
    "invoice-refund": "Refunds for duplicate charges are issued within ten days.",
    "db-slow": "Slow database queries: add an index and check the query plan.",
    "db-backup": "Nightly database snapshots are kept for thirty days.",
    "db-restore": "Restore a database from a snapshot in the backups tab.",
    "team-invite": "Invite members to a workspace from the team settings page.",
    "team-remove": "Remove a member from the organization; their account stays active.",
    "export-csv": "Export any report as a CSV spreadsheet from the reports menu.",
    "net-timeout": "Connection timeouts usually mean a firewall blocks the network path.",
    "cert-expire": "TLS certificates renew automatically thirty days before they expire.",
    "email-digest": "Notification digests are sent to your inbox every morning.",
    "ticket-7731": "Ticket ZQ-7731: webhook notifications were paused after network timeouts.",
    "sku-plan": "The plan code PLN-88-GOLD includes priority support and audit reports.",
    "build-id": "Build 2024.11.3-rc2 fixed the error when a release uploads large files.",
    "flag-beta": "Enable the beta flag ff_new_editor for your team to try the new editor.",
    "err-5003": "Status E5003 is returned when the upload is over the storage limit.",
    # pages about nothing in particular: what a meaning-only ranking returns for a bare code
    "welcome": "Welcome to the help center.",
    "contact": "Contact us at any time, we are happy to help.",
    "start": "Read the getting started guide first.",
    "changelog": "See the changelog for the latest changes.",
    "about": "About this documentation and how it is organised.",
}

IDENTIFIER_QUERIES = {
    "ERR-4471": "disk-full",
    "ZQ-7731": "ticket-7731",
    "PLN-88-GOLD": "sku-plan",
    "2024.11.3-rc2": "build-id",
    "ff_new_editor": "flag-beta",
    "E5003": "err-5003",
}
PARAPHRASE_QUERIES = {
    "how frequently should credentials be renewed": "keys-rotate",
    "I cannot remember my passphrase": "pw-reset",
    "undo a bad rollout": "deploy-rollback",
    "when am I billed": "invoice-date",
    "getting money back after being charged twice": "invoice-refund",
    "my sql is sluggish": "db-slow",
    "bring back data from a snapshot": "db-restore",
    "add people to my organisation": "team-invite",
    "download a spreadsheet": "export-csv",
    "ssl expiry": "cert-expire",
}


def recall_at_5(store, queries: dict[str, str], search_type: str) -> float:
    found = 0
    for query, relevant in queries.items():
        hits = store.search(query, embedding=concept_embedding(query), limit=5, search_type=search_type)
        found += relevant in [h.id for h in hits]
    return found / len(queries)


@pytest.fixture
def labelled(make_store):
    store = make_store(search_type="hybrid")
    store.create(DIM)
    store.upsert([Chunk(id=i, content=text, embedding=concept_embedding(text)) for i, text in DOCS.items()])
    return store


def test_hybrid_beats_each_side(labelled, store_kind):
    table = {
        kind: (recall_at_5(labelled, IDENTIFIER_QUERIES, kind), recall_at_5(labelled, PARAPHRASE_QUERIES, kind))
        for kind in ("vector", "keyword", "hybrid")
    }
    print(f"\nrecall@5 on {store_kind.name} ({len(IDENTIFIER_QUERIES)} identifier / {len(PARAPHRASE_QUERIES)} paraphrase queries)")
    for kind, (ident, para) in table.items():
        print(f"  {kind:<8} identifiers {ident:.2f}  paraphrases {para:.2f}")
    assert table["keyword"][0] == 1.0 and table["vector"][1] == 1.0  # each side has its strength
    assert table["vector"][0] < 0.5 and table["keyword"][1] < 0.5  # and its weakness
    assert table["hybrid"] == (1.0, 1.0)  # fusion keeps both
