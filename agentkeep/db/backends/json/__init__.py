"""JSON files through fsspec: files and values (layout.py), the kernel (kernel.py), JsonDb
(db.py) and GcsJsonDb (gcs.py)."""
