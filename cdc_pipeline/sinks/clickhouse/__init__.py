"""Everything of the ClickHouse sink (server or embedded chdb): writer, types, shaper, fast paths."""
