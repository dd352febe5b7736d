"""Reads the dashboard's HTML the way a test needs it: table rows with their attributes and cell texts."""

from __future__ import annotations

from html.parser import HTMLParser

import msgspec


class Cell(msgspec.Struct):
    attrs: dict[str, str]
    text: str = ""


class Row(msgspec.Struct):
    attrs: dict[str, str]
    cells: list[Cell] = msgspec.field(default_factory=list)

    def col(self, name: str) -> str:
        """The text of the cell with data-col=name."""
        return next(cell.text for cell in self.cells if cell.attrs.get("data-col") == name)

    @property
    def texts(self) -> list[str]:
        return [cell.text for cell in self.cells]


class Page(HTMLParser):
    """Every body <tr> (with the <table> id it is in), every element's attributes, and the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[str, Row]] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.chunks: list[str] = []
        self._tables: list[str] = []
        self._section = ""
        self._cell: Cell | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.elements.append((tag, values))
        if tag == "table":
            self._tables.append(values.get("id", ""))
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._section == "tbody":
            self.rows.append((self._tables[-1] if self._tables else "", Row(values)))
        elif tag in ("td", "th") and self.rows and self._section == "tbody":
            self._cell = Cell(values)
            self.rows[-1][1].cells.append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._tables:
            self._tables.pop()
        elif tag in ("thead", "tbody"):
            self._section = ""
        elif tag in ("td", "th"):
            if self._cell is not None:
                self._cell.text = " ".join(self._cell.text.split())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self._cell is not None:
            self._cell.text += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def table(self, table_id: str) -> list[Row]:
        """The body rows of the table with this id."""
        return [row for table, row in self.rows if table == table_id]

    def campaigns(self) -> dict[str, Row]:
        return {row.attrs["data-campaign"]: row for row in self.table("campaigns") if "data-campaign" in row.attrs}


def number(text: str) -> int:
    """A formatted count ("1,234") as an int."""
    return int(text.replace(",", ""))
