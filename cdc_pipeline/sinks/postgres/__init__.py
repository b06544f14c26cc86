"""Everything of the PostgreSQL (and TimescaleDB) sink: writer, types, shaper, names."""
