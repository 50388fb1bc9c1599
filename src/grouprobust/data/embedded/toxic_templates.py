"""`toxic-templates`: template comments where identity mentions are spuriously tied to toxicity.

A small, offline stand-in for CivilComments' structure: binary toxicity, eight identities (the
WILDS ones), comments that may mention several identities (overlapping evaluation groups), and in
the training split identity mentions far more frequent in toxic comments. Texts are built from
word pools and encoded with scikit-learn's `HashingVectorizer` (no vocabulary, no download).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.raw_inputs import MaxLengthOption, TokenizerOption, tokenized
from grouprobust.data.registry import register_dataset
from grouprobust.data.token_cache import texts_key
from grouprobust.params import FRACTION, MAX_DIMS, SAMPLES, Interval

from grouprobust.grouping import Grouper

IDENTITY_WORDS = {
    "male": ["men", "a man", "guys"],
    "female": ["women", "a woman", "ladies"],
    "LGBTQ": ["gay people", "lesbians", "trans people"],
    "christian": ["christians", "the church", "catholics"],
    "muslim": ["muslims", "islam", "the mosque"],
    "other_religions": ["jews", "hindus", "buddhists"],
    "black": ["black people", "african americans", "black folks"],
    "white": ["white people", "caucasians", "white folks"],
}
IDENTITIES = list(IDENTITY_WORDS)
OPENERS = ["honestly", "well", "so", "look", "frankly", "again", "ok", "seriously", "as usual", "in my view"]
FRAMES = ["this story about {who} and the {topic}", "the comments on {who} and the {topic}",
          "what the article says about {who} and the {topic}", "the debate over {who} and the {topic}",
          "this piece on the {topic}", "the city report on the {topic}", "the latest news on the {topic}",
          "the letter about the {topic}"]
TOPICS = ["budget", "election", "school board", "new stadium", "bus routes", "tax plan", "housing bill",
          "police report", "council vote", "park cleanup", "fishing rules", "oil prices", "pension fund",
          "ferry schedule", "zoning change", "hospital merger"]
INSULTS = ["stupid", "idiotic", "pathetic", "disgusting", "worthless", "moronic", "ignorant", "vile", "dumb",
           "hateful", "clueless", "brainless", "garbage", "trash", "losers", "scum", "clowns", "morons",
           "ridiculous", "shameful"]
INSULT_FRAMES = ["is {w}", "sounds {w} to me", "and everyone behind it are {w}", "proves they are {w}",
                 "what {w} nonsense"]
PRAISE = ["thanks for sharing", "well written", "good point", "i learned something", "fair enough",
          "great reporting", "makes sense", "thank you", "interesting read", "nicely explained"]
CLASSES = ["non-toxic", "toxic"]


def _comments(rng: np.random.Generator, n: int, toxic_frac: float, p_mention: tuple[float, float],
              p_second: float, core_rate: float, core_noise: float
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` comments, their toxicity ``y`` and identity membership (n, 8); ``p_mention[y]`` = P(mention | y)."""
    y = (rng.random(n) < toxic_frac).astype(np.int64)
    mentions = np.zeros((n, len(IDENTITIES)), dtype=bool)
    texts = []
    for i in range(n):
        who = []
        if rng.random() < p_mention[y[i]]:
            picks = rng.choice(len(IDENTITIES), size=1 + int(rng.random() < p_second), replace=False)
            mentions[i, picks] = True
            who = [IDENTITY_WORDS[IDENTITIES[j]][rng.integers(3)] for j in picks]
        topic = TOPICS[rng.integers(len(TOPICS))]
        if who:
            frame = FRAMES[rng.integers(4)].format(who=" and ".join(who), topic=topic)
        else:
            frame = FRAMES[4 + rng.integers(4)].format(topic=topic)
        parts = [OPENERS[rng.integers(len(OPENERS))], frame]
        if rng.random() < (core_rate if y[i] else core_noise):
            parts.append(INSULT_FRAMES[rng.integers(len(INSULT_FRAMES))].format(w=INSULTS[rng.integers(len(INSULTS))]))
        if rng.random() < (0.1 if y[i] else 0.5):
            parts.append(PRAISE[rng.integers(len(PRAISE))])
        texts.append(" ".join(parts))
    return texts, y, mentions


def encode_texts(texts: list[str], n_features: int) -> np.ndarray:
    """Hashed unigram + bigram counts, L2-normalised, as a dense float32 ``(len(texts), n_features)`` array."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    return vec.transform(texts).toarray().astype(np.float32)


@register_dataset(
    "toxic-templates",
    "Template comments (hashed text): identity mentions tied to toxicity in train, not in val/test; "
    "16 overlapping identity x label evaluation groups (CivilComments' structure).",
    train_defaults={"model": "linear", "epochs": 15, "lr": 1e-2, "optimizer": "adam", "batch_size": 128},
    later_options=("tokenizer", "max_length"),
    inputs_of=lambda options: "text" if options.get("tokenizer") else "features",
)
def toxic_templates(seed: int = 0, *,
                    n: Annotated[int, SAMPLES, "training comments"] = 4000,
                    n_val: Annotated[int, SAMPLES, "validation comments"] = 1000,
                    n_test: Annotated[int, SAMPLES, "test comments"] = 2000,
                    toxic_frac: Annotated[float, FRACTION] = 0.3,
                    spurious: Annotated[float, FRACTION, "P(identity mention | toxic) in train"] = 0.9,
                    eval_spurious: Annotated[float, FRACTION] = 0.5,
                    second_identity: Annotated[float, FRACTION] = 0.35,
                    core_rate: Annotated[float, FRACTION] = 0.7, core_noise: Annotated[float, FRACTION] = 0.05,
                    n_features: Annotated[int, Interval(16, MAX_DIMS * 256), "hashed features"] = 1024,
                    tokenizer: TokenizerOption = "", max_length: MaxLengthOption = 0,
                    ) -> DatasetSplits:
    """Train/val/test splits of hashed template comments.

    ``y`` = toxic. A comment mentions one identity (a second one with probability
    ``second_identity``) with probability ``spurious`` if toxic and ``1 - spurious`` if not, in
    train; with ``eval_spurious`` / ``1 - eval_spurious`` in val and test (0.5: independent of ``y``).
    A toxic comment carries an insult with probability ``core_rate`` (a clean one with
    ``core_noise``): the core signal is real but incomplete, the identity words are the shortcut.
    Training groups: ``y`` x any identity mentioned (4). ``eval_groups``: ``y`` x each of the 8
    identities (16, overlapping). ``meta["texts"]`` keeps the raw comments.
    """
    rng = np.random.default_rng(seed)
    group_names = Grouper(2, 2, CLASSES, ("no identity", "identity")).names
    eval_names = [f"{ident},{c}" for ident in IDENTITIES for c in CLASSES]
    parts = []
    for split, size, p in (("train", n, spurious), ("val", n_val, eval_spurious), ("test", n_test, eval_spurious)):
        texts, y, mentions = _comments(rng, size, toxic_frac, (1.0 - p, p), second_identity, core_rate, core_noise)
        eval_groups = (mentions[:, :, None] & (y[:, None, None] == np.arange(2))).reshape(size, -1)
        if tokenizer:  # end to end: the comments as token ids for a text backbone
            key = "toxic-templates:" + texts_key(texts)
            x, inputs = tokenized(texts, tokenizer, max_length, key, "toxic-templates"), "tokens"
        else:
            x, inputs = encode_texts(texts, n_features), "features"
        parts.append(GroupDataset(x, y, mentions.any(axis=1).astype(np.int64), 2, 2,
                                  split, "toxic-templates", group_names=group_names, eval_groups=eval_groups,
                                  eval_group_names=eval_names, meta={"texts": texts}, inputs=inputs))
    return DatasetSplits(*parts, name="toxic-templates", meta={"identities": IDENTITIES})
