"""The token cache: the tokenizer's own ids, truncation, padding and mask, the cache hit, new entries."""

from __future__ import annotations

import numpy as np
import pytest

from grouprobust.data.token_cache import cached_tokens, texts_key, tokenizer_identity
from grouprobust.errors import GroupRobustError

transformers = pytest.importorskip("transformers")

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away", "##s", "toxic", "kind"]
TEXTS = ["the cat sat on the mat", "a dog", "the dogs ran far far away from the cat", "kind"]


def word_piece(folder, words):
    """A BERT tokenizer read from a WordPiece ``vocab.txt`` of ``words`` written in ``folder``."""
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return transformers.BertTokenizerFast.from_pretrained(str(folder))


@pytest.fixture
def tokenizer(tmp_path):
    return word_piece(tmp_path / "tokenizer", WORDS)


class Counting:
    """A tokenizer that counts its calls and is otherwise the wrapped one."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_ids_and_mask_are_the_tokenizers_own_padded(tokenizer, tmp_path):
    calls = []
    tokens = cached_tokens(TEXTS, tokenizer, 64, key=texts_key(TEXTS), root=tmp_path,
                           progress=lambda d, t: calls.append((d, t)))
    own = [tokenizer(t)["input_ids"] for t in TEXTS]
    assert tokens.dtype == np.int32 and tokens.shape == (4, 2, max(map(len, own)))
    for row, ids in zip(tokens, own):
        assert row[0, :len(ids)].tolist() == ids and set(row[0, len(ids):].tolist()) <= {tokenizer.pad_token_id}
        assert row[1].tolist() == [1] * len(ids) + [0] * (tokens.shape[2] - len(ids))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)


def test_truncation_to_max_length(tokenizer, tmp_path):
    tokens = cached_tokens(TEXTS, tokenizer, 5, key=texts_key(TEXTS), root=tmp_path)
    assert tokens.shape == (4, 2, 5)
    assert tokens[2, 0].tolist() == tokenizer(TEXTS[2], truncation=True, max_length=5)["input_ids"]
    assert tokens[2, 0, -1] == tokenizer.sep_token_id and tokens[2, 1].all()


def test_a_second_call_does_not_tokenize_and_changes_make_new_entries(tokenizer, tmp_path):
    counting = Counting(tokenizer)
    first = cached_tokens(TEXTS, counting, 64, key=texts_key(TEXTS), root=tmp_path)
    built = counting.calls
    again = cached_tokens(TEXTS, counting, 64, key=texts_key(TEXTS), root=tmp_path, progress=lambda done, total: pytest.fail("tokenized again"))
    assert built > 0 and counting.calls == built and np.array_equal(first, again)
    changed = TEXTS[:-1] + ["kind dogs"]
    assert texts_key(changed) != texts_key(TEXTS)
    cached_tokens(changed, counting, 64, key=texts_key(changed), root=tmp_path)
    assert counting.calls == built + 1
    cached_tokens(TEXTS, counting, 32, key=texts_key(TEXTS), root=tmp_path)
    assert counting.calls == built + 2
    assert len(list((tmp_path / "tokens").glob("*.npy"))) == 3


def test_another_vocabulary_is_another_tokenizer(tokenizer, tmp_path):
    other = word_piece(tmp_path / "other", WORDS[::-1])
    assert tokenizer_identity(other) != tokenizer_identity(tokenizer)
    before = tokenizer_identity(tokenizer)
    tokenizer(TEXTS, truncation=True, max_length=3, padding="max_length")  # a call's settings are not its identity
    assert tokenizer_identity(tokenizer) == before
    a = cached_tokens(TEXTS, tokenizer, 64, key=texts_key(TEXTS), root=tmp_path)
    b = cached_tokens(TEXTS, other, 64, key=texts_key(TEXTS), root=tmp_path)
    assert not np.array_equal(a, b)


def test_bad_max_length_and_a_damaged_entry_are_one_line(tokenizer, tmp_path):
    with pytest.raises(GroupRobustError, match="max_length"):
        cached_tokens(TEXTS, tokenizer, 0, key="k", root=tmp_path)
    cached_tokens(TEXTS, tokenizer, 64, key="k", root=tmp_path)
    (entry,) = (tmp_path / "tokens").glob("*.npy")
    entry.write_bytes(b"garbage")
    with pytest.raises(GroupRobustError, match="damaged"):
        cached_tokens(TEXTS, tokenizer, 64, key="k", root=tmp_path)
