"""DynamoDB: values (codec.py), tables and GSIs (layout.py), the kernel (kernel.py, with its
reads and writes in reads.py and writes.py) and DynamoDb (db.py)."""
