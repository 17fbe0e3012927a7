"""Offline, deterministic sentence data for the quickstart: training pairs, a corpus and a graded STS set.

A sentence realises a *content*: (topic, subject, verb, object, adjective, setting). Each of these concepts has
several synonyms, and a sentence is one of several word-order templates. Twelve topics form four groups; the
settings (``in the park``, ``at the weekend``, ...) belong to a group. So the meaning of a sentence is fully known,
and similarity can be graded from how it was generated:

=====  =============================================================================
score  pair
=====  =============================================================================
5      paraphrase: same content, another template, other synonyms for every concept
4      same topic, exactly two of subject / verb / object shared
3      same topic, at most one of subject / verb / object shared
2      other topic of the same group, same setting
1      other topic of the same group, other setting
0      topic of another group
=====  =============================================================================

Surface words of the two sentences never coincide for a shared concept, and templates are random (a paraphrase
always changes template), so word overlap carries little of the score: an untrained encoder scores a low Spearman,
and one trained on :func:`make_pair_dataset` (paraphrases as positives) learns the synonyms and scores high.
Training and evaluation draw from the same ~14k contents: this checks a training pipeline end to end in
seconds, not generalisation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported where used: light users and the GPU machine may lack datasets
    import datasets

T = TypeVar("T")

# Each concept is a tuple of interchangeable surface forms.
Concept = tuple[str, ...]

_GROUPS: dict[str, dict[str, dict[str, list[Concept]]]] = {
    "nature": {
        "animals": {
            "subjects": [("dog", "hound", "canine"), ("cat", "feline"), ("horse", "pony"), ("bird", "songbird")],
            "verbs": [
                ("chases", "pursues", "hunts"),
                ("eats", "devours"),
                ("watches", "observes"),
                ("guards", "protects"),
            ],
            "objects": [("rabbit", "bunny"), ("mouse", "rodent"), ("squirrel", "chipmunk"), ("fish", "trout")],
        },
        "weather": {
            "subjects": [("storm", "tempest"), ("wind", "gale"), ("rain", "downpour"), ("sun", "sunshine")],
            "verbs": [("soaks", "drenches"), ("batters", "pounds"), ("warms", "heats"), ("dries", "parches")],
            "objects": [("village", "hamlet"), ("coast", "shoreline"), ("valley", "dale"), ("fields", "meadows")],
        },
        "gardening": {
            "subjects": [
                ("gardener", "horticulturist"),
                ("farmer", "grower"),
                ("neighbour", "resident"),
                ("volunteer", "helper"),
            ],
            "verbs": [("plants", "sows"), ("waters", "irrigates"), ("prunes", "trims"), ("harvests", "picks")],
            "objects": [
                ("roses", "blossoms"),
                ("tomatoes", "tomato vines"),
                ("hedge", "shrubs"),
                ("seedlings", "saplings"),
            ],
        },
    },
    "leisure": {
        "football": {
            "subjects": [
                ("striker", "forward"),
                ("goalkeeper", "keeper"),
                ("coach", "trainer"),
                ("referee", "official"),
            ],
            "verbs": [("kicks", "strikes"), ("blocks", "stops"), ("drills", "coaches"), ("praises", "applauds")],
            "objects": [("ball", "football"), ("penalty", "spot kick"), ("team", "squad"), ("defender", "fullback")],
        },
        "music": {
            "subjects": [
                ("singer", "vocalist"),
                ("pianist", "keyboardist"),
                ("drummer", "percussionist"),
                ("band", "group"),
            ],
            "verbs": [("performs", "plays"), ("rehearses", "practises"), ("records", "tapes"), ("composes", "writes")],
            "objects": [("song", "tune"), ("album", "record"), ("concerto", "symphony"), ("ballad", "serenade")],
        },
        "cooking": {
            "subjects": [
                ("chef", "cook"),
                ("baker", "confectioner"),
                ("grandmother", "granny"),
                ("waiter", "steward"),
            ],
            "verbs": [("chops", "dices"), ("bakes", "roasts"), ("seasons", "spices"), ("serves", "dishes up")],
            "objects": [("onions", "shallots"), ("bread", "loaf"), ("soup", "broth"), ("cake", "gateau")],
        },
    },
    "economy": {
        "finance": {
            "subjects": [
                ("banker", "financier"),
                ("investor", "shareholder"),
                ("accountant", "bookkeeper"),
                ("trader", "broker"),
            ],
            "verbs": [("buys", "purchases"), ("sells", "offloads"), ("audits", "inspects"), ("lends", "loans")],
            "objects": [
                ("shares", "stocks"),
                ("bonds", "securities"),
                ("accounts", "ledgers"),
                ("mortgage", "home loan"),
            ],
        },
        "shopping": {
            "subjects": [
                ("customer", "shopper"),
                ("cashier", "clerk"),
                ("tourist", "visitor"),
                ("teenager", "youngster"),
            ],
            "verbs": [
                ("returns", "exchanges"),
                ("orders", "requests"),
                ("compares", "contrasts"),
                ("wraps", "packages"),
            ],
            "objects": [("jacket", "coat"), ("shoes", "sneakers"), ("gift", "present"), ("groceries", "provisions")],
        },
        "office": {
            "subjects": [
                ("manager", "boss"),
                ("employee", "worker"),
                ("secretary", "assistant"),
                ("director", "executive"),
            ],
            "verbs": [
                ("schedules", "arranges"),
                ("signs", "approves"),
                ("drafts", "prepares"),
                ("cancels", "calls off"),
            ],
            "objects": [
                ("meeting", "conference"),
                ("contract", "agreement"),
                ("report", "memo"),
                ("budget", "spending plan"),
            ],
        },
    },
    "science": {
        "computers": {
            "subjects": [
                ("programmer", "developer"),
                ("engineer", "technician"),
                ("hacker", "intruder"),
                ("student", "learner"),
            ],
            "verbs": [("debugs", "fixes"), ("installs", "deploys"), ("compiles", "builds"), ("deletes", "erases")],
            "objects": [
                ("program", "application"),
                ("server", "mainframe"),
                ("database", "data store"),
                ("laptop", "notebook"),
            ],
        },
        "space": {
            "subjects": [
                ("astronaut", "cosmonaut"),
                ("telescope", "observatory"),
                ("rocket", "launcher"),
                ("probe", "spacecraft"),
            ],
            "verbs": [
                ("orbits", "circles"),
                ("photographs", "images"),
                ("approaches", "nears"),
                ("studies", "investigates"),
            ],
            "objects": [
                ("moon", "lunar surface"),
                ("planet", "world"),
                ("comet", "icy comet"),
                ("galaxy", "star system"),
            ],
        },
        "medicine": {
            "subjects": [
                ("doctor", "physician"),
                ("nurse", "carer"),
                ("surgeon", "specialist"),
                ("pharmacist", "chemist"),
            ],
            "verbs": [
                ("treats", "cures"),
                ("examines", "checks"),
                ("vaccinates", "immunises"),
                ("operates on", "does surgery on"),
            ],
            "objects": [
                ("patient", "sick person"),
                ("child", "kid"),
                ("wound", "injury"),
                ("fever", "high temperature"),
            ],
        },
    },
}

_SETTINGS: dict[str, list[Concept]] = {
    "nature": [
        ("in the park", "in the parkland"),
        ("near the river", "by the stream"),
        ("in the countryside", "out in the country"),
    ],
    "leisure": [
        ("at the weekend", "on saturday"),
        ("in the evening", "at night"),
        ("during the festival", "at the fair"),
    ],
    "economy": [
        ("in the city", "downtown"),
        ("on monday morning", "early on monday"),
        ("before the deadline", "ahead of the deadline"),
    ],
    "science": [
        ("in the laboratory", "in the lab"),
        ("at the research centre", "at the institute"),
        ("with great care", "very carefully"),
    ],
}

_ADJECTIVES: list[Concept] = [
    ("big", "large"),
    ("small", "little"),
    ("happy", "cheerful"),
    ("quick", "fast"),
    ("famous", "renowned"),
    ("tired", "weary"),
]

_TEMPLATES = (
    "the {adj} {subj} {verb} the {obj} {setting}.",
    "{setting}, the {adj} {subj} {verb} the {obj}.",
    "the {obj} is what the {adj} {subj} {verb} {setting}.",
    "{setting} there is a {adj} {subj} that {verb} the {obj}.",
    "it is the {adj} {subj} who {verb} the {obj} {setting}.",
    "we saw how the {adj} {subj} {verb} the {obj} {setting}.",
)

_TOPIC_GROUP = {topic: group for group, topics in _GROUPS.items() for topic in topics}
_TOPICS = sorted(_TOPIC_GROUP)
_CONCEPTS_PER_SLOT = 4  # subjects, verbs and objects per topic
_SVO = ("subject", "verb", "object")


@dataclass(frozen=True)
class Content:
    """What a sentence says: a topic and the index of each concept (subject, verb, object, adjective, setting)."""

    topic: str
    subject: int
    verb: int
    object: int
    adjective: int
    setting: int

    @property
    def group(self) -> str:
        return _TOPIC_GROUP[self.topic]

    def concepts(self) -> dict[str, Concept]:
        """Map each template slot to the synonyms of its concept."""
        vocab = _GROUPS[self.group][self.topic]
        return {
            "subj": vocab["subjects"][self.subject],
            "verb": vocab["verbs"][self.verb],
            "obj": vocab["objects"][self.object],
            "adj": _ADJECTIVES[self.adjective],
            "setting": _SETTINGS[self.group][self.setting],
        }


@dataclass(frozen=True)
class Sentence:
    """A realised content: the template and the synonym chosen for each slot."""

    content: Content
    template: int
    words: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        text = _TEMPLATES[self.template].format(**dict(self.words))
        return text[0].upper() + text[1:]


def _random_content(rng: random.Random, topic: str | None = None) -> Content:
    """Draw a content uniformly, within ``topic`` when given."""
    topic = topic or rng.choice(_TOPICS)
    group = _TOPIC_GROUP[topic]
    return Content(
        topic=topic,
        subject=rng.randrange(_CONCEPTS_PER_SLOT),
        verb=rng.randrange(_CONCEPTS_PER_SLOT),
        object=rng.randrange(_CONCEPTS_PER_SLOT),
        adjective=rng.randrange(len(_ADJECTIVES)),
        setting=rng.randrange(len(_SETTINGS[group])),
    )


def _realise(
    rng: random.Random, content: Content, avoid: Sentence | None = None, template: int | None = None
) -> Sentence:
    """Write ``content`` as a sentence; words used by ``avoid`` for the same concept are not reused."""
    if template is None:
        template = rng.randrange(len(_TEMPLATES))
    used = {}
    if avoid is not None:
        previous = avoid.content.concepts()
        used = {slot: word for slot, word in avoid.words if previous[slot] == content.concepts()[slot]}
    words = tuple(
        (slot, rng.choice([w for w in synonyms if w != used.get(slot)]))
        for slot, synonyms in content.concepts().items()
    )
    return Sentence(content, template, words)


def _other(rng: random.Random, choices: Sequence[T], exclude: T) -> T:
    """Pick uniformly among ``choices`` other than ``exclude``."""
    return rng.choice([c for c in choices if c != exclude])


def _paraphrase(rng: random.Random, sentence: Sentence) -> Sentence:
    """Same content, another template, other synonyms for every concept."""
    template = _other(rng, list(range(len(_TEMPLATES))), sentence.template)
    return _realise(rng, sentence.content, avoid=sentence, template=template)


def _related_content(rng: random.Random, content: Content, score: int) -> Content:
    """Draw a content whose similarity to ``content`` is ``score`` in 0..4 (see the module table)."""
    if score in (4, 3):
        kept = rng.sample(_SVO, 2 if score == 4 else rng.randint(0, 1))
        indices = range(_CONCEPTS_PER_SLOT)
        changed = {f: _other(rng, indices, getattr(content, f)) for f in _SVO if f not in kept}
        return replace(_random_content(rng, content.topic), **{f: getattr(content, f) for f in kept}, **changed)
    if score in (2, 1):
        topic = _other(rng, list(_GROUPS[content.group]), content.topic)
        other = _random_content(rng, topic)
        settings = list(range(len(_SETTINGS[content.group])))
        setting = content.setting if score == 2 else _other(rng, settings, content.setting)
        return replace(other, setting=setting)
    topic = rng.choice([t for t in _TOPICS if _TOPIC_GROUP[t] != content.group])
    return _random_content(rng, topic)


def make_pair_dataset(n_pairs: int, seed: int = 0, hard_negative: bool = False) -> datasets.Dataset:
    """Generate ``n_pairs`` (anchor, positive) paraphrase pairs, plus ``negative_1`` when ``hard_negative``.

    The positive says the same thing with other synonyms and another template; the hard negative uses the anchor's
    template but another topic.
    """
    import datasets

    rng = random.Random(seed)
    columns: dict[str, list[str]] = {"anchor": [], "positive": [], **({"negative_1": []} if hard_negative else {})}
    for _ in range(n_pairs):
        anchor = _realise(rng, _random_content(rng))
        columns["anchor"].append(anchor.text)
        columns["positive"].append(_paraphrase(rng, anchor).text)
        if hard_negative:
            topic = _other(rng, _TOPICS, anchor.content.topic)
            negative = _realise(rng, _random_content(rng, topic), template=anchor.template)
            columns["negative_1"].append(negative.text)
    return datasets.Dataset.from_dict(columns)


def make_corpus(n: int, seed: int = 0) -> datasets.Dataset:
    """Generate ``n`` random sentences in column ``text`` (unsupervised training, tokenizer training)."""
    import datasets

    rng = random.Random(seed)
    return datasets.Dataset.from_dict({"text": [_realise(rng, _random_content(rng)).text for _ in range(n)]})


def make_sts_dataset(n_pairs: int, seed: int = 0) -> tuple[list[str], list[str], list[float]]:
    """Generate an STS-style set: ``(sentences1, sentences2, scores)`` with scores 0..5 in equal shares.

    Scores follow the module table; pair order is shuffled so score levels are not sorted.
    """
    rng = random.Random(seed)
    levels = [5 - i % 6 for i in range(n_pairs)]
    rng.shuffle(levels)
    sentences1, sentences2 = [], []
    for score in levels:
        first = _realise(rng, _random_content(rng))
        if score == 5:
            second = _paraphrase(rng, first)
        else:
            second = _realise(rng, _related_content(rng, first.content, score), avoid=first)
        sentences1.append(first.text)
        sentences2.append(second.text)
    return sentences1, sentences2, [float(s) for s in levels]
