"""SQL shared by the SQLite and PostgreSQL suppression stores (`?` placeholders; PostgreSQL renumbers them)."""

from __future__ import annotations

from engaged.suppression.model import SuppressionEntry, SuppressionSearch, SuppressionType

COLUMNS = "recipient, type, source, description, created, updated, domain"

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppression_list (
    recipient TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL,
    created {real} NOT NULL,
    updated {real} NOT NULL,
    domain TEXT NOT NULL,
    PRIMARY KEY (recipient, type)
);
CREATE INDEX IF NOT EXISTS suppression_updated ON suppression_list (updated, recipient, type);
CREATE INDEX IF NOT EXISTS suppression_domain ON suppression_list (domain);
CREATE TABLE IF NOT EXISTS suppression_followed (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
"""

FOLLOWED = "SELECT seq FROM suppression_followed WHERE name = 'rules'"
FOLLOW = """
INSERT INTO suppression_followed (name, seq) VALUES ('rules', ?)
ON CONFLICT (name) DO UPDATE SET seq = CASE WHEN excluded.seq > suppression_followed.seq
                                           THEN excluded.seq ELSE suppression_followed.seq END
"""

UPSERT = f"""
INSERT INTO suppression_list ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (recipient, type) DO UPDATE SET
    source = excluded.source, description = excluded.description, updated = excluded.updated
"""

Row = tuple[str, str, str, str, float, float, str]


def row_of(entry: SuppressionEntry) -> Row:
    return (entry.recipient, entry.type, entry.source, entry.description, entry.created, entry.updated, entry.domain)


def entry_of(row: tuple[object, ...]) -> SuppressionEntry:
    recipient, kind, source, description, created, updated = row[:6]
    type_: SuppressionType = "transactional" if kind == "transactional" else "non_transactional"
    return SuppressionEntry(recipient=str(recipient), type=type_, source=str(source), description=str(description),
                            created=float(str(created)), updated=float(str(updated)))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where(search: SuppressionSearch) -> tuple[str, list[object]]:
    """WHERE text and parameters for the filters of a search (not its paging)."""
    clauses: list[str] = ["1 = 1"]
    params: list[object] = []
    for column, values in (("recipient", search.recipients), ("type", search.types), ("source", search.sources)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    if search.domain:
        clauses.append("domain = ?")
        params.append(search.domain.lower())
    if search.description:
        if search.description_strict:
            clauses.append("description = ?")
            params.append(search.description)
        else:
            clauses.append("lower(description) LIKE ? ESCAPE '\\'")
            params.append(f"%{_escape_like(search.description.lower())}%")
    if search.since is not None:
        clauses.append("updated >= ?")
        params.append(search.since)
    if search.until is not None:
        clauses.append("updated < ?")
        params.append(search.until)
    return " AND ".join(clauses), params


def select(search: SuppressionSearch) -> tuple[str, list[object]]:
    """The page query: filters, keyset cursor, order by (updated, recipient, type), LIMIT and OFFSET."""
    text, params = where(search)
    order = "ASC" if search.ascending else "DESC"
    if search.after is not None:
        text += f" AND (updated, recipient, type) {'>' if search.ascending else '<'} (?, ?, ?)"
        params.extend(search.after)
    sql = (f"SELECT {COLUMNS} FROM suppression_list WHERE {text}"
           f" ORDER BY updated {order}, recipient {order}, type {order} LIMIT ? OFFSET ?")
    return sql, [*params, search.limit, search.offset]


def count(search: SuppressionSearch, cap: int) -> tuple[str, list[object]]:
    text, params = where(search)
    return f"SELECT COUNT(*) FROM (SELECT 1 FROM suppression_list WHERE {text} LIMIT ?) AS matched", [*params, cap]


def suppressed(recipients: int) -> str:
    return (f"SELECT recipient FROM suppression_list WHERE type = ? AND recipient IN"
            f" ({', '.join('?' for _ in range(recipients))})")
