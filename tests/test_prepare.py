"""prepare end to end on a generated local corpus, and every kind of bad input it must survive."""

import errno
import json

import numpy as np
import pytest
from click.testing import CliRunner

from common import shards as shards_mod
from common.cli import main
from common.data import PreparedData
from common.prepare import prepare
from common.shards import ShardError
from common.sources import SourceError
from common.tokenizer import Tokenizer, TooLittleText
from tests.conftest import make_docs, write_parquet


def test_prepared_directory_is_complete(prepared, small_corpus):
    m = json.loads((prepared / "manifest.json").read_text())
    assert {e["role"] for e in m["shards"].values()} == {"train", "val"}
    data = PreparedData.open(prepared)
    tok = Tokenizer.load(prepared / "tokenizer.json")
    assert data.vocab_size == tok.vocab_size <= 512 and data.bos_id == tok.bos_id
    # Shards hold exactly the tokenized documents of the val file, in order.
    val_docs = [json.loads(line)["text"] for line in (small_corpus / "val.jsonl").read_text().splitlines()]
    shard = data.val_shards[0]
    assert shard.num_docs == len(val_docs)
    assert tok.decode(shard.doc(3)) == val_docs[3]
    assert m["stats"]["unigram_bpb"] > 0


def test_val_rows_fixed_and_cached(prepared):
    data = PreparedData.open(prepared)
    rows = data.val_rows(32, 32 * 20)
    assert rows.shape == (20, 33) and rows.dtype == np.int32 and (rows[:, 0] == data.bos_id).all()
    # In order: the first row begins with the first val document.
    first = np.asarray(data.val_shards[0].doc(0)[:32], np.int32)
    np.testing.assert_array_equal(rows[0, 1 : 1 + len(first)], first)
    assert list((prepared / "val").glob("val_T32_E640_*.npy"))
    np.testing.assert_array_equal(PreparedData.open(prepared).val_rows(32, 640), rows)


def test_rerun_is_a_no_op_and_resumes(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "d"
    calls = {"n": 0}
    real = shards_mod.write_shard

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr("common.prepare.write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(small_corpus), out, vocab_size=512)
    first = out / "tokens" / "train_00000.bin"
    mtime = first.stat().st_mtime_ns
    monkeypatch.setattr("common.prepare.write_shard", real)
    prepare(str(small_corpus), out, vocab_size=512)
    assert first.stat().st_mtime_ns == mtime  # kept from the interrupted run, not redone
    assert len(list((out / "tokens").glob("*.bin"))) == 3
    assert not list(out.rglob("*.tmp"))
    PreparedData.open(out)


def test_shards_from_another_encoder_are_remade(small_corpus, tmp_path):
    import json

    out = tmp_path / "d"
    prepare(str(small_corpus), out, vocab_size=512)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["encoder"] for e in manifest["shards"].values()} == {"tiktoken"}
    first = out / "tokens" / "train_00000.bin"
    before = first.read_bytes()
    del manifest["shards"]["train_00000"]["encoder"]  # as written before encoding moved to tiktoken
    (out / "manifest.json").write_text(json.dumps(manifest))
    mtime = first.stat().st_mtime_ns
    prepare(str(small_corpus), out, vocab_size=512)
    assert first.stat().st_mtime_ns != mtime and first.read_bytes() == before  # re-made, same ids
    assert json.loads((out / "manifest.json").read_text())["shards"]["train_00000"]["encoder"] == "tiktoken"
    PreparedData.open(out)


def test_corrupt_and_wrong_files_are_named(prepared, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(prepared, d)
    (d / ".verified.json").unlink(missing_ok=True)
    m = json.loads((d / "manifest.json").read_text())
    for e in m["shards"].values():  # the copy's manifest points at the same relative paths
        assert (d / e["path"]).exists()
    shard = d / "tokens" / "train_00001.bin"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train_00001\.bin is corrupt.*autoresearch prepare"):
        PreparedData.open(d)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(ShardError, match=r"train_00001\.bin.*truncated"):
        PreparedData.open(d)
    shard.unlink()
    with pytest.raises(ShardError, match=r"missing.*train_00001\.bin"):
        PreparedData.open(d)


def test_bad_paths(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        prepare(str(tmp_path / "nope"), tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .parquet, .jsonl or .txt files"):
        prepare(str(tmp_path / "empty"), tmp_path / "d")


def test_parquet_without_text_column(tmp_path):
    write_parquet(tmp_path / "c" / "a.parquet", make_docs(20, 0), column="content")
    with pytest.raises(SourceError, match=r"a\.parquet has no `text` column \(columns: content\)"):
        prepare(str(tmp_path / "c"), tmp_path / "d")


def test_bad_documents_are_skipped_and_counted(tmp_path):
    c = tmp_path / "c"
    write_parquet(c / "a.parquet", make_docs(200, 0) + ["", "   "])
    (c / "b.jsonl").write_bytes(
        b'{"text": "fine doc"}\n{"text": "bad \xff\xfe bytes"}\nnot json\n{"text": ""}\n'
    )
    (c / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (c / "val.txt").write_text(" ".join(make_docs(30, 9)))
    out = prepare(str(c), tmp_path / "d", vocab_size=300)
    skipped = json.loads((out / "manifest.json").read_text())["stats"]["skipped"]
    assert skipped == {"empty": 3, "not_utf8": 2, "bad_json": 1}


def test_held_out_split_is_deterministic(tmp_path):
    c = tmp_path / "c"
    write_parquet(c / "a.parquet", make_docs(600, 4))
    a = prepare(str(c), tmp_path / "d1", vocab_size=300)
    b = prepare(str(c), tmp_path / "d2", vocab_size=300)
    ma, mb = (json.loads((x / "manifest.json").read_text()) for x in (a, b))
    assert ma["stats"]["val_docs"] == mb["stats"]["val_docs"] > 0
    assert ma["shards"]["val_00000"]["sha256"] == mb["shards"]["val_00000"]["sha256"]
    assert ma["stats"]["train_docs"] + ma["stats"]["val_docs"] == 600


def test_too_little_text(tmp_path):
    c = tmp_path / "c"
    write_parquet(c / "a.parquet", ["just a few words"] * 3)
    write_parquet(c / "val.parquet", ["and a val doc"])
    with pytest.raises(TooLittleText, match="characters of training text"):
        prepare(str(c), tmp_path / "d")


def test_no_val_documents(tmp_path):
    c = tmp_path / "c"
    write_parquet(c / "a.parquet", make_docs(200, 0))
    write_parquet(c / "val.parquet", [""])
    with pytest.raises(SourceError, match="too little text for a validation split"):
        prepare(str(c), tmp_path / "d", vocab_size=300)


def test_cli_errors_are_one_line_and_disk_full_keeps_work(small_corpus, tmp_path, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(main, ["prepare", "--dataset", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d" / "tokens" / "x.bin"))

    monkeypatch.setattr("common.prepare.write_shard", full)
    r = runner.invoke(
        main,
        ["prepare", "--dataset", str(small_corpus), "--data-dir", str(tmp_path / "d"), "--vocab-size", "512"],
    )
    assert r.exit_code == 1 and "disk full" in r.output and "rerun to resume" in r.output
    assert (tmp_path / "d" / "tokenizer.json").exists()  # the finished step is kept


def test_cli_prepare_sets_current(small_corpus, tmp_path):
    r = CliRunner().invoke(main, ["prepare", "--dataset", str(small_corpus), "--vocab-size", "512"])
    assert r.exit_code == 0, r.output
    assert PreparedData.open().dir.name.startswith(small_corpus.name)


def test_prepare_py_is_an_alias(small_corpus, tmp_path):
    """`python prepare.py ...` (upstream's habit) runs `autoresearch prepare ...`."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "AUTORESEARCH_HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [sys.executable, "prepare.py", "--dataset", str(small_corpus), "--vocab-size", "300"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (Path(r.stdout.strip()) / "manifest.json").exists()


def test_prepare_says_how_many_steps_of_each_profile_one_epoch_feeds():
    from common.prepare import epoch_note

    note = epoch_note(1_048_576 + 1000)
    assert "h100 2," in note  # 1,049,576 // 524,288 tokens per step
    assert "ci 1,024," in note or "ci 1,024." in note  # // 1,024
    assert "cpu 256," in note  # // 4,096
