"""Files API through the official openai client against a real server."""

import json

import httpx
import openai
import pytest

from tests.conftest import chat_jsonl


def upload(client, name: str, data: bytes):
    return client.files.create(file=(name, data), purpose="fine-tune")


def test_upload_list_retrieve_content_delete(client):
    data = chat_jsonl(12)
    created = upload(client, "train.jsonl", data)
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == len(data) and created.filename == "train.jsonl" and created.status == "processed"
    assert "12 examples" in created.status_details

    assert client.files.retrieve(created.id).id == created.id
    assert created.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.content(created.id).read() == data

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert created.id not in [f.id for f in client.files.list()]


@pytest.mark.parametrize(
    "name,payload,fmt",
    [
        ("pc.jsonl", "\n".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) for i in range(3)), "prompt_completion"),
        ("alpaca.json", json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}] * 3), "alpaca"),
        (
            "alpaca.jsonl",
            "\n".join(json.dumps({"instruction": "Add", "input": "1+1", "output": "2"}) for _ in range(3)),
            "alpaca",
        ),
    ],
)
def test_formats_accepted(client, name, payload, fmt):
    created = upload(client, name, payload.encode())
    assert f"in {fmt} format" in created.status_details


def test_bytes_stored_under_id_not_filename(client, server):
    created = upload(client, "../../evil.jsonl", chat_jsonl(2))
    assert created.filename == "evil.jsonl"
    assert (server.data_dir / "files" / created.id).read_bytes() == chat_jsonl(2)
    assert not (server.data_dir.parent / "evil.jsonl").exists()


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "empty"),
        (b"\x00\x01\x02binary\xff" * 10, "binary"),
        (chat_jsonl(2) + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', "line 3"),
        (chat_jsonl(1) + b'{"messages": [oops\n', "line 2"),
        (b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}\n', "unknown role"),
        (b'{"messages": [{"role": "user", "content": "only a question"}]}\n', "no assistant message"),
        (b'{"foo": 1}\n', "unknown record format"),
    ],
)
def test_bad_files_rejected_with_reason(client, data, needle):
    with pytest.raises(openai.BadRequestError) as info:
        upload(client, "bad.jsonl", data)
    error = info.value.body
    assert needle in error["message"], error
    assert error["param"] == "file" and error["type"] == "invalid_request_error" and error["code"]


def test_rejected_file_is_not_kept(client):
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError):
        upload(client, "bad.jsonl", b"{nope\n")
    assert {f.id for f in client.files.list()} == before


def test_upload_over_limit_is_413(client, server):
    big = chat_jsonl(5000)  # ~400 KB, over the server's 300 KB limit
    assert len(big) > 300000
    with pytest.raises(openai.APIStatusError) as info:
        upload(client, "big.jsonl", big)
    assert info.value.status_code == 413
    assert info.value.body["code"] == "file_too_large"


def test_unknown_file_is_404_in_envelope(server):
    response = httpx.get(f"{server.base_url}/v1/files/file-doesnotexist")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_purpose_and_unknown_route_are_4xx_envelopes(server):
    response = httpx.post(f"{server.base_url}/v1/files", files={"file": ("a.jsonl", chat_jsonl(1))}, data={"purpose": "nonsense"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
    response = httpx.get(f"{server.base_url}/v1/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


def test_file_pagination(client):
    ids = {upload(client, f"p{i}.jsonl", chat_jsonl(1)).id for i in range(3)}
    seen = [f.id for f in client.files.list(limit=2)]  # auto-paging follows after/has_more to the end
    assert ids <= set(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize(
    "data,needle",
    [
        (
            b'{"prompt": "a", "completion": "b"}\n{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
            "line 2",
        ),  # formats mixed within one file
        (b'{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}\n', "messages[0].content"),
        (
            b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}\n',
            "line 1",
        ),  # consecutive user turns
        (b'{\n  "prompt": "a",\n  "completion": "b"\n}\n', "line 1"),  # a pretty-printed object where JSONL was expected
    ],
)
def test_more_bad_files_name_the_line(client, data, needle):
    with pytest.raises(openai.BadRequestError) as info:
        upload(client, "bad.jsonl", data)
    assert needle in info.value.body["message"], info.value.body


def test_bom_and_json_array_in_jsonl_are_accepted_with_warnings(client):
    array = json.dumps([{"instruction": "Say hi", "output": "hi"}] * 3).encode()
    created = upload(client, "looks-like.jsonl", array)  # a JSON array under a .jsonl name
    assert created.validation["container"] == "json"
    assert "container_mismatch" in created.validation["warning_counts"]
    with_bom = upload(client, "bom.jsonl", b"\xef\xbb\xbf" + chat_jsonl(2))
    assert with_bom.validation["n_examples"] == 2
    assert with_bom.validation["format"] == "chat" and with_bom.validation["kind"] == "sft"


def test_preference_and_text_files_report_their_kind(client):
    prefs = upload(client, "prefs.jsonl", b'{"prompt": "p", "chosen": "good", "rejected": "bad"}\n' * 3)
    text = upload(client, "text.jsonl", b'{"text": "<|im_start|>user\\nhi<|im_end|>"}\n' * 3)
    assert prefs.validation["kind"] == "preference" and text.validation["kind"] == "text"
