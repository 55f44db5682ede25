"""The SQLite inventory: schema and migrations, taps with their keys and counters, the
command journal and the events read from the taps."""
