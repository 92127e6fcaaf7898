"""MongoDB: MongoDb and AsyncMongoDb (db.py) on one kernel (_async/kernel.py, its sync twin
generated)."""
