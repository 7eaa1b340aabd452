"""SQLite storage: schema and migrations, the writer and readers, memories, search."""
