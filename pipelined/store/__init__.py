"""SQLite storage: connections, migrations, the writer thread, read queries.

The store knows nothing of watchdog or pycrdt: it stores bytes and rows.
"""
