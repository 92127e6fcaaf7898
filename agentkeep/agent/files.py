"""Files given with a run's message: text files go to the model inline (each in a `<file>`
block after the message), images as OpenAI-protocol image parts (a data URL, for a model
that reads images). Anything else is refused before the run starts: a PDF or an office
document needs a reader first (the knowledge readers have them: add it to the agent's
knowledge instead)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Sequence

from agentkeep.db.errors import InvalidInputError

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/yaml",
              "application/x-ndjson", "application/csv")
MAX_FILE_BYTES = 2 * 1024 * 1024  # a run and its messages stay under the db's 4 MB record
MAX_FILES = 10


@dataclass(frozen=True)
class File:
    """A file for one run: its name, its bytes and (optionally) its media type."""

    name: str
    content: bytes
    content_type: str | None = None

    def describe(self) -> dict:
        """What the run records of it (not the bytes: the message the model read has them)."""
        return {"name": self.name, "content_type": self.content_type, "size": len(self.content)}


def check_files(files: Any) -> list[File]:
    """The files, each a File of a kind a model can read; else InvalidInputError."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)) or not all(isinstance(f, File) for f in files):
        raise InvalidInputError("files must be a list of agentkeep.agent.File")
    if len(files) > MAX_FILES:
        raise InvalidInputError(f"at most {MAX_FILES} files a run, got {len(files)}")
    for f in files:
        if not isinstance(f.name, str) or not f.name or not isinstance(f.content, bytes):
            raise InvalidInputError("a File needs a name and its content as bytes")
        if len(f.content) > MAX_FILE_BYTES:
            raise InvalidInputError(f"file {f.name!r} is over {MAX_FILE_BYTES} bytes")
        _part(f)  # refuses what it cannot send
    return list(files)


def user_message(text: str, files: Sequence[File]) -> dict:
    """The run's user message: the text, and the files after it."""
    if not files:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *(_part(f) for f in files)]}


def _part(f: File) -> dict:
    kind = (f.content_type or "").split(";")[0].strip().lower()
    if kind in IMAGE_TYPES:
        data = base64.b64encode(f.content).decode()
        return {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}}
    if kind and not (kind.startswith("text/") or kind in TEXT_TYPES or kind == "application/octet-stream"):
        raise InvalidInputError(f"file {f.name!r} is {kind}: only text files and images (png, jpeg, gif, webp) "
                                "go to the model; add documents to the agent's knowledge")
    try:
        text = f.content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"file {f.name!r} is not UTF-8 text (nor an image)") from None
    return {"type": "text", "text": f'<file name="{f.name}">\n{text}\n</file>'}
