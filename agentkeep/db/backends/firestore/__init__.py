"""Firestore: document ids and values (codec.py), collections and indexes (layout.py), the
kernel (kernel.py, its reads in reads.py) and FirestoreDb (db.py)."""
