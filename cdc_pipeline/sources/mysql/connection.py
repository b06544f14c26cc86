"""How to reach a MySQL/MariaDB server: one value object shared by the reader, catalog and checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pymysql


@dataclass(frozen=True)
class MySqlConnectionSettings:
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)  # never printed

    def as_pymysql_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "charset": "utf8mb4",
        }

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(**self.as_pymysql_kwargs(), autocommit=True)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"
