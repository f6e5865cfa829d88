"""What counts as an image file, by its name and by its first bytes: the one rule that discovery,
hvdweather-predict's folder search, fetch, the duplicate check and the TensorFlow decoder share.
TensorFlow- and Pillow-free."""
from __future__ import annotations

from pathlib import Path

# The extensions read as images (any case) and the format each one names.
FORMAT_OF_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP",
                       ".webp": "WEBP"}
IMAGE_EXTENSIONS = frozenset(FORMAT_OF_EXTENSION)

# Leading bytes of each format the decoders read: the extension is a name, these are the content.
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAGIC = ((JPEG_MAGIC, "JPEG"), (PNG_MAGIC, "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))


def is_visible(name: str) -> bool:
    """Hidden (.name) and underscore (_name: __MACOSX, _cache) files and folders are never data."""
    return not name.startswith((".", "_"))


def is_image_name(name: str) -> bool:
    """A visible file name with an image extension, in any case."""
    return is_visible(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def visible_below(root: str | Path, folder: str | Path) -> bool:
    """No folder between `root` and `folder` (a folder under it) is hidden."""
    return all(is_visible(part) for part in Path(folder).relative_to(root).parts)


def content_format(head: bytes) -> str:
    """The format its first bytes say (JPEG, PNG, GIF, BMP, WEBP), or '' when unknown."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "")
