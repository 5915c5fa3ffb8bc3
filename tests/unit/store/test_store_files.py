"""FileService: upload (store + check + record), list with cursors, get, find, delete."""

from __future__ import annotations

import io
import json

import pytest

from tuneserve.data import validate_file
from tuneserve.errors import InvalidRequest, NotFound, PayloadTooLarge
from tuneserve.store.files import FileService

CHAT = "".join(
    json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
    for i in range(3)
).encode()
ALPACA = json.dumps([{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(4)], indent=2).encode()
PROMPT_COMPLETION = "".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) + "\n" for i in range(5)).encode()


def stored_files(root):
    """Every file under the blob root (the .partial dir included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def all_ids(files, project="proj", **kw):
    rows, _ = files.list(project, **kw)
    return [r.id for r in rows]


@pytest.mark.parametrize(
    "filename, data, fmt, n",
    [
        ("train.jsonl", CHAT, "chat", 3),
        ("alpaca.json", ALPACA, "alpaca", 4),
        ("legacy.jsonl", PROMPT_COMPLETION, "prompt_completion", 5),
    ],
)
def test_create_valid_training_file(files, files_root, filename, data, fmt, n):
    row = files.create("proj", filename, "fine-tune", io.BytesIO(data))

    assert row.id.startswith("file-")
    assert (row.project, row.filename, row.purpose) == ("proj", filename, "fine-tune")
    assert (row.format, row.n_examples, row.bytes, row.status) == (fmt, n, len(data), "processed")
    assert row.deleted is False and row.created_at > 0
    assert str(n) in row.status_details and fmt in row.status_details

    # bytes under data/files/<id>, identical to what was sent, nothing else on disk
    assert (files_root / row.id).read_bytes() == data
    assert stored_files(files_root) == [row.id]
    got, path = files.content_path("proj", row.id)
    assert path == files_root / row.id and got.id == row.id

    # and the row round-trips through the database
    again = files.get("proj", row.id)
    assert (again.filename, again.format, again.n_examples, again.bytes, again.status) == (
        filename,
        fmt,
        n,
        len(data),
        "processed",
    )


def test_user_filename_never_becomes_a_path(files, files_root, tmp_path):
    row = files.create_bytes("proj", "../../etc/passwd", "fine-tune", CHAT)
    assert row.filename == "../../etc/passwd"
    assert files.get("proj", row.id).filename == "../../etc/passwd"
    assert stored_files(files_root) == [row.id]
    assert not (tmp_path / "etc").exists() and not (files_root.parent / "etc").exists()
    assert not any("passwd" in p.name for p in tmp_path.rglob("*"))


def test_empty_filename_gets_a_name(files):
    assert files.create_bytes("proj", "", "fine-tune", CHAT).filename == "upload"


def test_invalid_training_file_names_the_line_and_leaves_nothing(files, files_root):
    bad = CHAT.splitlines(keepends=True)
    bad.insert(1, b'{"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}\n')
    with pytest.raises(InvalidRequest) as info:
        files.create_bytes("proj", "bad.jsonl", "fine-tune", b"".join(bad))
    assert "line 2" in info.value.message
    assert "bad.jsonl" in info.value.message
    assert (info.value.code, info.value.param, info.value.status) == ("unknown_role", "file", 400)
    assert stored_files(files_root) == []
    assert files.list("proj") == ([], False)


@pytest.mark.parametrize(
    "data, code, line",
    [
        (b"", "empty_file", None),
        (CHAT + b"{not json\n", "invalid_json", 4),
        (CHAT[:10] + b"\xff\xfe" + CHAT[10:], "invalid_file_encoding", 1),
        (json.dumps([{"question": "q"}]).encode(), "unknown_format", 1),
    ],
)
def test_other_invalid_files(files, files_root, data, code, line):
    with pytest.raises(InvalidRequest) as info:
        files.create_bytes("proj", "f.jsonl", "fine-tune", data)
    assert info.value.code == code
    if line is not None:
        assert f"line {line}" in info.value.message
    assert stored_files(files_root) == []
    assert all_ids(files) == []


def test_oversize_upload(sessions, blobs, files_root):
    files = FileService(sessions, blobs, max_upload_bytes=len(CHAT) - 1, check=validate_file)
    with pytest.raises(PayloadTooLarge) as info:
        files.create_bytes("proj", "big.jsonl", "fine-tune", CHAT)
    assert (info.value.status, info.value.code, info.value.param) == (413, "file_too_large", "file")
    assert str(len(CHAT) - 1) in info.value.message
    assert stored_files(files_root) == []
    assert all_ids(files) == []
    # exactly at the limit is accepted
    exact = FileService(sessions, blobs, max_upload_bytes=len(CHAT), check=validate_file)
    assert exact.create_bytes("proj", "ok.jsonl", "fine-tune", CHAT).bytes == len(CHAT)


def test_bad_purpose(files, files_root):
    with pytest.raises(InvalidRequest) as info:
        files.create_bytes("proj", "f.jsonl", "training", CHAT)
    assert (info.value.code, info.value.param) == ("invalid_purpose", "purpose")
    assert stored_files(files_root) == []


def test_other_purposes_are_stored_without_the_training_check(files, files_root):
    row = files.create_bytes("proj", "notes.txt", "user_data", b"not json at all")
    assert (row.status, row.format, row.n_examples, row.bytes) == ("processed", None, None, 15)
    assert (files_root / row.id).read_bytes() == b"not json at all"


def test_list_pages_newest_first(files):
    created = [files.create_bytes("proj", f"f{i}.jsonl", "fine-tune", CHAT).id for i in range(5)]
    files.create_bytes("other-proj", "elsewhere.jsonl", "fine-tune", CHAT)
    newest_first = created[::-1]

    seen, after, pages = [], None, []
    while True:
        rows, has_more = files.list("proj", limit=2, after=after)
        pages.append(([r.id for r in rows], has_more))
        seen += [r.id for r in rows]
        if not has_more:
            break
        after = rows[-1].id
    assert seen == newest_first
    assert [(len(ids), more) for ids, more in pages] == [(2, True), (2, True), (1, False)]

    rows, has_more = files.list("proj", limit=5)
    assert ([r.id for r in rows], has_more) == (newest_first, False)
    rows, has_more = files.list("proj", limit=4)
    assert ([r.id for r in rows], has_more) == (newest_first[:4], True)


def test_list_ascending(files):
    created = [files.create_bytes("proj", f"f{i}.jsonl", "fine-tune", CHAT).id for i in range(5)]
    rows, has_more = files.list("proj", order="asc", limit=3)
    assert ([r.id for r in rows], has_more) == (created[:3], True)
    rows, has_more = files.list("proj", order="asc", limit=3, after=rows[-1].id)
    assert ([r.id for r in rows], has_more) == (created[3:], False)


def test_list_purpose_filter(files):
    tune = [files.create_bytes("proj", "t.jsonl", "fine-tune", CHAT).id for _ in range(2)]
    other = files.create_bytes("proj", "u.bin", "user_data", b"\x00\x01").id
    assert all_ids(files, purpose="fine-tune") == tune[::-1]
    assert all_ids(files, purpose="user_data") == [other]
    assert all_ids(files, purpose="batch") == []
    assert all_ids(files) == [other, *tune[::-1]]


def test_delete_hides_the_file(files):
    keep, gone = (files.create_bytes("proj", f"{n}.jsonl", "fine-tune", CHAT).id for n in ("keep", "gone"))
    files.delete("proj", gone)

    assert all_ids(files) == [keep]
    for call in (
        lambda: files.get("proj", gone),
        lambda: files.content_path("proj", gone),
        lambda: files.delete("proj", gone),
        lambda: files.find("proj", gone, "training_file"),
        lambda: files.find("proj", "gone.jsonl", "training_file"),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.code == "file_not_found"
    # a page cursor pointing at the deleted file still works
    rows, _ = files.list("proj", after=gone)
    assert [r.id for r in rows] == [keep]


def test_get_is_scoped_to_the_project(files):
    row = files.create_bytes("proj", "f.jsonl", "fine-tune", CHAT)
    with pytest.raises(NotFound) as info:
        files.get("other-proj", row.id, param="training_file")
    assert (info.value.status, info.value.param) == (404, "training_file")
    with pytest.raises(NotFound):
        files.get("proj", "file-doesnotexist")


def test_find_by_name_returns_the_newest(files):
    first = files.create_bytes("proj", "train.jsonl", "fine-tune", CHAT)
    files.create_bytes("proj", "other.jsonl", "fine-tune", CHAT)
    newest = files.create_bytes("proj", "train.jsonl", "fine-tune", PROMPT_COMPLETION)
    files.create_bytes("proj", "train.jsonl", "user_data", b"not training data")  # names only find fine-tune files
    files.create_bytes("other-proj", "train.jsonl", "fine-tune", CHAT)

    found = files.find("proj", "train.jsonl", "training_file")
    assert found.id == newest.id and found.format == "prompt_completion"
    assert files.find("proj", first.id, "training_file").id == first.id  # by id too

    files.delete("proj", newest.id)
    assert files.find("proj", "train.jsonl", "training_file").id == first.id
    with pytest.raises(NotFound) as info:
        files.find("proj", "nope.jsonl", "validation_file")
    assert info.value.param == "validation_file"
