"""Tests for the embedded demo corpus (common/demo.py): determinism, parquet output, and the structure it promises.

Run: .venv/bin/pytest tests/test_demo.py -s   (-s shows the generation time and sizes)
"""

from __future__ import annotations

import re
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.demo import build_lexicon, generate_documents, write_demo_corpus

SEED = 1337


@pytest.fixture(scope="module")
def docs() -> list[str]:
    t0 = time.perf_counter()
    out = generate_documents(600, SEED)
    dt = time.perf_counter() - t0
    print(f"\ngenerated 600 docs, {sum(len(d.encode()) for d in out) / 1e6:.2f} MB in {dt:.2f} s")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    train, val = write_demo_corpus(out)
    print(f"\nwrote the default demo corpus in {time.perf_counter() - t0:.2f} s")
    return out, train, val


def _texts(path) -> list[str]:
    return pq.read_table(path).column("text").to_pylist()


def test_deterministic(docs):
    assert generate_documents(600, SEED) == docs
    other = generate_documents(50, SEED + 1)
    assert other != docs[:50]
    assert not set(other) & set(docs)


def test_parquet_output(corpus, tmp_path):
    out, train, val = corpus
    assert [p.name for p in train] == [f"shard_{k:05d}.parquet" for k in range(len(train))]
    assert val.name == "val.parquet"
    assert not list(out.glob("*.tmp"))
    table = pq.read_table(train[0])
    assert table.column_names == ["text"]
    assert str(table.schema.field("text").type) == "string"
    assert pq.ParquetFile(train[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    train_docs = [d for p in train for d in _texts(p)]
    val_docs = _texts(val)
    train_mb = sum(len(d.encode()) for d in train_docs) / 1e6
    val_mb = sum(len(d.encode()) for d in val_docs) / 1e6
    print(
        f"\ntrain {len(train_docs)} docs {train_mb:.2f} MB in {len(train)} shards, val {len(val_docs)} docs {val_mb:.2f} MB"
    )
    assert 3.5 < train_mb < 6.0
    assert 0.5 < val_mb < 1.2
    assert not set(train_docs) & set(val_docs), "val must not repeat train documents"
    # Idempotent: the same seed again gives the same text, and stale shards from other sizes are removed.
    again, again_val = write_demo_corpus(tmp_path, train_docs=60, val_docs=10, docs_per_shard=20)
    assert len(again) == 3
    assert [d for p in again for d in _texts(p)] == train_docs[:60]
    assert _texts(again_val) == val_docs[:10]
    fewer, _ = write_demo_corpus(tmp_path, train_docs=60, val_docs=10, docs_per_shard=30)
    assert sorted(tmp_path.glob("shard_*.parquet")) == fewer


def test_lengths_and_layout(docs):
    lengths = np.array([len(d) for d in docs])
    assert (lengths > 8000).sum() >= 5, "some documents must be longer than any context"
    assert lengths.min() > 100
    for d in docs:
        title, _, body = d.partition("\n\n")
        assert title and title[0].isupper() and "\n" not in title
        assert body and "\n\n\n" not in d and d == d.strip()


def test_arithmetic_adds_up(docs):
    text = "\n".join(docs)
    add = re.findall(
        r"had (\d+) \w+\. Then (\w+) (?:got|found|bought|received|made) (\d+) more, so \2 had (\d+) ", text
    )
    sub = re.findall(
        r"had (\d+) \w+, but (\w+) (?:lost|sold|gave away) (\d+) of them(?: to \w+)?, so \2 had (\d+) left\.",
        text,
    )
    mul = re.findall(r"had (\d+) \w+ with (\d+) \w+ in each, so \w+ had (\d+) ", text)
    assert len(add) > 100 and len(sub) > 100 and len(mul) > 50
    assert all(int(n) + int(m) == int(k) for n, _, m, k in add)
    assert all(int(n) - int(m) == int(k) for n, _, m, k in sub)
    assert all(int(a) * int(b) == int(k) for a, b, k in mul)
    # Chronicles: the town's population follows every arrival and departure.
    for d in docs:
        pops = re.findall(r"(?:the town had (\d+) people|(\d+) more people came|(\d+) people left)", d)
        pop = None
        for had, came, left in pops:
            if came:
                pop += int(came)
            elif left:
                pop -= int(left)
            else:
                assert pop is None or int(had) == pop
                pop = int(had)


def test_numbers_have_structure(docs):
    n_lists = 0
    for d in docs:
        years = [int(y) for y in re.findall(r"\bIn (\d{4}),", d)]
        assert years == sorted(years) and len(set(years)) == len(years), "years increase through a document"
        chapters = [int(c) for c in re.findall(r"^Chapter (\d+)$", d, re.M)]
        assert chapters == list(range(1, len(chapters) + 1))
        born = re.search(r"born in (\d{4})\.", d)
        for year, age in re.findall(r"In (\d{4}), when \w+(?: and \w+)? (?:was|were) (\d+) years old", d):
            assert int(year) - int(born.group(1)) == int(age)
        # Numbered lists run 1., 2., 3.; an announced count or total matches the items.
        for block in re.findall(r"(?:^\d+\. .*\n?)+", d, re.M):
            nums = [int(x) for x in re.findall(r"^(\d+)\. ", block, re.M)]
            assert nums == list(range(1, len(nums) + 1))
            n_lists += 1
        for k, block in re.findall(r"There are (\d+) kinds of \w+:\n((?:\d+\. .*\n?)+)", d):
            assert int(k) == len(block.strip().split("\n"))
        for block, total in re.findall(r"You will need:\n((?:\d+\. .*\n)+)That is (\d+) things in all\.", d):
            assert sum(int(x) for x in re.findall(r"^\d+\. (\d+) ", block, re.M)) == int(total)
    assert n_lists > 50


def test_subject_verb_agreement(docs):
    lex = build_lexicon(SEED)
    sg = {n.sg for n in lex.nouns}
    pl = {n.pl for n in lex.nouns}
    base = {v.base for v in lex.verbs} | {"are", "were", "have"}
    third = {v.s for v in lex.verbs} | {"is", "was", "has"}
    assert not (sg & pl) and not (base & third) and not ((sg | pl) & (base | third))
    checked = 0
    for d in docs:
        words = d.split(" ")
        for w1, w2 in zip(words, words[1:]):
            if w2 in base or w2 in third:  # a bare noun directly before a present/be/have form is its subject
                if w1 in sg:
                    assert w2 in third, (w1, w2)
                    checked += 1
                elif w1 in pl:
                    assert w2 in base, (w1, w2)
                    checked += 1
    assert checked > 1000
    # a/an agrees with the next word's first letter.
    text = " ".join(docs)
    assert not re.search(r"\ba [aeiou]", text) and not re.search(r"\ban [^aeiou]", text)


def test_pronouns_agree_with_protagonist(docs):
    lex = build_lexicon(SEED)
    wrong = {
        "f": r"\b(he|him|his|they|their)\b",
        "m": r"\b(she|her|they|their)\b",
        "p": r"\b(he|him|his|she|her)\b",
    }
    stories = 0
    for d in docs:
        m = re.match(
            r".*\n\n(?:Chapter 1\n\n)?([A-Z]\w+)( and [A-Z]\w+)? (?:was|were) [\w ]+ who lived in ", d
        )
        if not m:
            continue
        g = "p" if m.group(2) else lex.gender[m.group(1)]
        body = re.sub(r'"[^"]*"', "", d)  # dialogue speaks in the first person
        assert not re.search(wrong[g], body, re.I), (g, d[:300])
        stories += 1
    assert stories > 100


def test_bigram_entropy_well_below_unigram(docs):
    data = np.frombuffer("\n\n".join(docs).encode(), dtype=np.uint8).astype(np.int64)

    def entropy(counts: np.ndarray) -> float:
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())

    h1 = entropy(np.bincount(data, minlength=256))
    h2 = entropy(np.bincount(data[:-1] * 256 + data[1:], minlength=256 * 256)) - h1  # H(x_t | x_{t-1})
    print(f"\nbyte unigram entropy {h1:.3f} bits, bigram conditional {h2:.3f} bits")
    assert h1 > 4.0
    assert h2 < h1 - 1.0
