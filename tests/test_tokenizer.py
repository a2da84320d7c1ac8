import numpy as np
import pytest

from common.tokenizer import BOS, SPECIAL_TOKENS, Tokenizer, TooLittleText, save_tokenizer, train_tokenizer
from tests.conftest import make_docs


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(make_docs(300, 0), vocab_size=400), d)
    return Tokenizer.load(d / "tokenizer.json"), np.load(d / "token_bytes.npy")


SAMPLES = [
    "Hello world! Numbers: 123456. Unicode: 你好 😀",
    "  leading spaces\n\n\ttabs\r\nand CRLF  ",
    "\x00 control \x7f chars, combining e\u0301, RTL \u05e9\u05dc\u05d5\u05dd, ZWJ 👩‍👩‍👧",
    "<|bos|> looks special but is plain text",
    "",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_exact(tok, text):
    t, _ = tok
    assert t.decode(t.encode(text)) == text


def test_round_trip_random_unicode(tok):
    t, _ = tok
    rng = np.random.default_rng(0)
    for _ in range(50):
        cps = rng.integers(1, 0x2FFFF, 40)
        text = "".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF)
        assert t.decode(t.encode(text)) == text


def test_token_bytes_sum_to_utf8_length(tok):
    t, token_bytes = tok
    for text in SAMPLES:
        assert int(token_bytes[t.encode(text)].sum()) == len(text.encode("utf-8"))
    assert t.bos_id == SPECIAL_TOKENS.index(BOS)
    assert all(token_bytes[t.tok.token_to_id(s)] == 0 for s in SPECIAL_TOKENS)
    assert (token_bytes[len(SPECIAL_TOKENS) :] > 0).all()


def test_special_text_is_not_a_special_token(tok):
    t, _ = tok
    assert t.bos_id not in t.encode("<|bos|>")


def test_batch_matches_single(tok):
    t, _ = tok
    assert t.encode_batch(SAMPLES) == [t.encode(s) for s in SAMPLES]


def test_too_little_text():
    with pytest.raises(TooLittleText, match="smaller --vocab-size"):
        train_tokenizer(["tiny corpus"] * 3, vocab_size=8192)


def test_vocab_range():
    with pytest.raises(ValueError, match="uint16"):
        train_tokenizer(["x"], vocab_size=70000)


def test_tiktoken_encoding_matches_hf_tokenizers(tok):
    # Encoding runs through tiktoken built from the HF BPE; it must give HF's ids, on edge cases and on a corpus.
    t, _ = tok
    texts = SAMPLES + make_docs(200, 7) + ["a" * 5000, "1234567890" * 50, " \n" * 300, "x\u2028y\u00a0z"]
    assert [t.encode(x) for x in texts] == [t.encode_hf(x) for x in texts]
    assert t.encode_batch(texts) == [t.encode_hf(x) for x in texts]


def test_tiktoken_refuses_a_foreign_tokenizer():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    from common.tokenizer import tiktoken_encoding

    with pytest.raises(ValueError, match="prepare the data again"):
        tiktoken_encoding(HFTokenizer(models.WordLevel({"a": 0}, unk_token="a")))
