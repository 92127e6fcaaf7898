"""`agentkeep.db.firestore` as before: the backend moved to `agentkeep.db.backends.firestore`; its public names are
here too, so old imports keep working."""

from agentkeep.db.backends.firestore.codec import MAX_ID_BYTES, doc_id
from agentkeep.db.backends.firestore.db import FirestoreDb, main
from agentkeep.db.backends.firestore.layout import default_index_config, index_config

__all__ = ['MAX_ID_BYTES', 'FirestoreDb', 'default_index_config', 'doc_id', 'index_config', 'main']


if __name__ == "__main__":  # python -m agentkeep.db.firestore [prefix] > firestore.indexes.json
    import sys

    main(sys.argv)
