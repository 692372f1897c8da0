"""Small helpers for the dashboard's HTML forms (pure)."""


def split_list(text: str) -> list[str]:
    """``"a, b\\nc"`` -> ``["a", "b", "c"]``: comma- or line-separated form input, blanks dropped."""
    return [item for item in (part.strip() for part in text.replace("\n", ",").split(",")) if item]
