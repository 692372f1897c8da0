"""Page arithmetic for the dashboard's lists (pure)."""

from dataclasses import dataclass
from urllib.parse import urlencode

DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class Pager:
    page: int  # 1-based
    size: int
    total: int
    params: tuple[tuple[str, str], ...] = ()  # the list's filters, kept in the page links

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else self.offset + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.offset + self.size)

    def query(self, page: int) -> str:
        return "?" + urlencode([*self.params, ("page", str(page))])

    @property
    def previous(self) -> str | None:
        return self.query(self.page - 1) if self.page > 1 else None

    @property
    def next(self) -> str | None:
        return self.query(self.page + 1) if self.page < self.pages else None


def clamp_page(page: int, size: int, total: int) -> int:
    """``page`` within 1..last page (a stale link past the end shows the last page)."""
    return max(1, min(page, max(1, -(-total // size))))
