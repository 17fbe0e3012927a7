import re
from collections import Counter

import pytest
from scipy.stats import spearmanr

from hf_contrastive.data import make_corpus, make_pair_dataset, make_sts_dataset, synthetic


def _phrase_concepts() -> dict[str, tuple]:
    """Map every surface phrase of the generator's vocabulary to the concept it stands for."""
    phrases = {}
    for group, topics in synthetic._GROUPS.items():
        for topic, slots in topics.items():
            for slot, concepts in slots.items():
                phrases.update({w: (topic, slot, i) for i, concept in enumerate(concepts) for w in concept})
        phrases.update(
            {w: (group, "setting", i) for i, concept in enumerate(synthetic._SETTINGS[group]) for w in concept}
        )
    phrases.update({w: ("adjective", i) for i, concept in enumerate(synthetic._ADJECTIVES) for w in concept})
    return phrases


PHRASES = _phrase_concepts()
_PATTERN = re.compile(r"\b(" + "|".join(map(re.escape, sorted(PHRASES, key=len, reverse=True))) + r")\b")


def _concepts(sentence: str) -> set[tuple]:
    return {PHRASES[p] for p in _PATTERN.findall(sentence.lower())}


def _words(sentence: str) -> set[str]:
    return set(re.findall(r"\w+", sentence.lower()))


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def _all_concepts():
    for topics in synthetic._GROUPS.values():
        for slots in topics.values():
            yield from (c for concepts in slots.values() for c in concepts)
    yield from (c for concepts in synthetic._SETTINGS.values() for c in concepts)
    yield from synthetic._ADJECTIVES


def test_every_phrase_names_one_concept():
    seen = Counter(w for concepts in _all_concepts() for w in concepts)
    assert [w for w, count in seen.items() if count > 1] == []


def test_generators_are_deterministic_for_a_seed():
    assert (
        make_pair_dataset(50, seed=1, hard_negative=True).to_list()
        == make_pair_dataset(50, seed=1, hard_negative=True).to_list()
    )
    assert make_pair_dataset(50, seed=1).to_list() != make_pair_dataset(50, seed=2).to_list()
    assert make_sts_dataset(60, seed=3) == make_sts_dataset(60, seed=3)
    assert make_corpus(40, seed=4).to_list() == make_corpus(40, seed=4).to_list()


def test_pair_columns_and_no_empty_texts():
    plain = make_pair_dataset(30, seed=0)
    assert plain.column_names == ["anchor", "positive"] and len(plain) == 30
    hard = make_pair_dataset(30, seed=0, hard_negative=True)
    assert hard.column_names == ["anchor", "positive", "negative_1"]
    corpus = make_corpus(30, seed=0)
    assert corpus.column_names == ["text"] and len(corpus) == 30
    texts = [t for row in hard.to_list() for t in row.values()] + corpus["text"][:]
    assert all(t.strip() and t[0].isupper() and t.endswith(".") for t in texts)


def test_positive_is_a_paraphrase_with_other_words_for_the_same_concepts():
    for row in make_pair_dataset(200, seed=0, hard_negative=True).to_list():
        anchor, positive, negative = (_concepts(row[c]) for c in ("anchor", "positive", "negative_1"))
        assert anchor == positive and len(anchor) == 5
        topic = {c[0] for c in anchor if len(c) == 3 and c[1] != "setting"}
        assert topic == {c[0] for c in positive if len(c) == 3 and c[1] != "setting"}
        assert topic.isdisjoint(c[0] for c in negative)
        content_words = set(_PATTERN.findall(row["anchor"].lower()))
        assert content_words.isdisjoint(_PATTERN.findall(row["positive"].lower()))
        assert row["anchor"] != row["positive"]


def test_sts_scores_cover_0_to_5_in_equal_shares():
    s1, s2, scores = make_sts_dataset(600, seed=0)
    assert len(s1) == len(s2) == len(scores) == 600
    assert Counter(scores) == {float(s): 100 for s in range(6)}
    assert all(t.strip() for t in s1 + s2)


@pytest.mark.parametrize("score", range(6))
def test_sts_pairs_follow_the_score_table(score):
    s1, s2, scores = make_sts_dataset(300, seed=1)
    for a, b, s in zip(s1, s2, scores, strict=True):
        if s != score:
            continue
        ca, cb = _concepts(a), _concepts(b)
        topic_a = next(c[0] for c in ca if len(c) == 3 and c[1] == "subjects")
        topic_b = next(c[0] for c in cb if len(c) == 3 and c[1] == "subjects")
        group_a, group_b = (synthetic._TOPIC_GROUP[t] for t in (topic_a, topic_b))
        shared_svo = sum(1 for c in ca & cb if len(c) == 3 and c[1] in ("subjects", "verbs", "objects"))
        setting_shared = any(c[1] == "setting" for c in ca & cb if len(c) == 3)
        expected = {
            5: ca == cb,
            4: topic_a == topic_b and shared_svo == 2,
            3: topic_a == topic_b and shared_svo <= 1,
            2: topic_a != topic_b and group_a == group_b and setting_shared,
            1: topic_a != topic_b and group_a == group_b and not setting_shared,
            0: group_a != group_b,
        }[score]
        assert expected, (score, a, b)


def test_word_overlap_is_a_poor_predictor_and_meaning_a_good_one():
    """An encoder that only sees surface words scores low; one that knows the synonyms scores high."""
    s1, s2, scores = make_sts_dataset(600, seed=0)
    lexical = spearmanr([_jaccard(_words(a), _words(b)) for a, b in zip(s1, s2, strict=True)], scores).statistic
    meaning = spearmanr([_jaccard(_concepts(a), _concepts(b)) for a, b in zip(s1, s2, strict=True)], scores).statistic
    assert lexical < 0.3
    assert meaning > 0.8
